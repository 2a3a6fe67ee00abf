"""The power-state watch: a VM that powers off gives its volumes back."""

import logging

from .. import VirtualMachine

log = logging.getLogger("vmdkops.vsphere")
WATCH_WAIT = 2  # seconds each WaitForUpdatesEx may wait: how soon the watch sees its stop


class PowerWatch:
    def watch_power_off(self, powered_off, stop):
        """Call ``powered_off([vm, ...])`` with the VMs that powered off, one
        call per update, until ``stop`` is set: WaitForUpdatesEx on
        ``runtime.powerState`` through a property collector of its own. VMs
        already off when the watch starts are reported too (they may have
        powered off while no one watched). A lost session or connection is made
        again, waiting longer each time."""
        delay = 1
        while not stop.is_set():
            try:
                self._watch(powered_off, stop)
                return
            except Exception as exc:  # noqa: BLE001 - the watch outlives vSphere's outages
                log.warning("power-state watch interrupted (%s); again in %d s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 60)
                with self._lock:
                    self._checked = 0.0  # check the session before the next attempt

    def _watch(self, powered_off, stop):
        from pyVmomi import vim, vmodl

        content = self.content
        collector = content.propertyCollector.CreatePropertyCollector()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        pc = vmodl.query.PropertyCollector
        collector.CreateFilter(pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[pc.PropertySpec(type=vim.VirtualMachine,
                                     pathSet=["name", "config.uuid", "runtime.powerState"])]),
            partialUpdates=True)
        known, version = {}, ""
        self._watching = collector
        try:
            while not stop.is_set():
                update = collector.WaitForUpdatesEx(version, pc.WaitOptions(maxWaitSeconds=WATCH_WAIT))
                if update is None:
                    continue
                version = update.version
                off = []
                for found in (o for f in update.filterSet or [] for o in f.objectSet or []):
                    if found.kind == "leave":
                        known.pop(found.obj._moId, None)
                        continue
                    props = known.setdefault(found.obj._moId, {})
                    props.update({c.name: c.val for c in found.changeSet or []})
                    changed = {c.name for c in found.changeSet or []}
                    if "runtime.powerState" in changed and props["runtime.powerState"] == "poweredOff" \
                            and props.get("config.uuid"):
                        off.append(VirtualMachine(props["name"], props["config.uuid"].lower(), ""))
                if off:
                    powered_off(off)
        except vmodl.fault.RequestCanceled:
            if not stop.is_set():
                raise
        finally:
            self._watching = None
            try:
                collector.DestroyPropertyCollector()
                view.Destroy()
            except Exception:  # noqa: BLE001 - the session may be gone already
                pass

    def stop_watch(self):
        """End a power-state watch's pending wait (its ``stop`` must be set first)."""
        collector = self._watching
        if collector is not None:
            try:
                collector.CancelWaitForUpdates()
            except Exception:  # noqa: BLE001 - it ends at its next wait anyway
                pass
