"""The vsphere volume driver (spec plugin §3.4-§3.7): Docker's volume
operations on top of the executor, with mkfs at create, attach and mount on
the first Mount, unmount and detach on the last Unmount, and reference counts
per mount ID that are rebuilt after a restart from Docker and /proc/mounts.

The counting and the recovery are the shared ``RefcountedDriver``'s."""

import logging
import os
import threading
import time

from .. import fs
from ..refcount import DriverError, RefcountedDriver
from .client import ExecutorError
from .devices import DeviceNotFound, wait_for

log = logging.getLogger("vmdkops.plugin")


def created_at(asctime_text):
    """A volume's creation time (UTC, as its side-car keeps it) as Docker reads it, or None."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(asctime_text))
    except (TypeError, ValueError):
        return None


class Driver(RefcountedDriver):
    ERRORS = (ExecutorError, DriverError, DeviceNotFound, fs.FsError, OSError)

    def __init__(self, config, client, devices):
        super().__init__(config)
        self.client = client
        self.devices = devices
        self._stopping = threading.Event()

    # -- start, liveness and stop ---------------------------------------------------

    def start(self):
        """Report, then rebuild the mount counts."""
        log.info("Docker VMDK plugin started socket=%s mount_root=%s", self.config.socket_path,
                 self.config.MountRoot)
        threading.Thread(target=self._report, name="report", daemon=True).start()
        self.recover()

    def _report(self):
        """Tell the executor every ReportInterval seconds that this VM's
        plugin is alive: a VM that stops reporting can have its volumes
        taken over by another (once it is cut off from them)."""
        failing = False
        while True:
            try:
                self.client.run("report", timeout=self.config.ReportInterval, retries=0)
                if failing:
                    log.info("Reports to vmdk-opsd go through again")
                failing = False
            except ExecutorError as exc:
                if not failing:
                    log.warning("Could not report to vmdk-opsd that this plugin is alive: %s", exc)
                failing = True
            if self._stopping.wait(self.config.ReportInterval):
                return

    def stop(self):
        self._stopping.set()

    # -- names --------------------------------------------------------------------

    def _get(self, name):
        if not name:
            raise DriverError(" No volume with name as empty string exists")
        meta = self.client.run("get", name)
        if not isinstance(meta, dict):
            raise DriverError(f"Volume {name} has no metadata")
        return meta

    def full_name(self, name, meta=None):
        """``vol@ds`` for a name as Docker gave it, and the volume's metadata if fetched."""
        if "@" in name:
            return name, meta
        meta = meta or self._get(name)
        datastore = meta.get("datastore")
        if not isinstance(datastore, str) or not datastore:
            raise DriverError(f"Volume {name} has no datastore in its metadata")
        return f"{name}@{datastore}", meta

    resolve = full_name

    # -- Create and Remove ------------------------------------------------------------

    def create(self, name, opts):
        opts = dict(opts or {})
        if "fstype" not in opts and "clone-from" not in opts:
            opts["fstype"] = "ext4"
        if "fstype" in opts:
            fs.check(opts["fstype"])
        try:
            self.client.run("create", name, opts, timeout=900)
        except ExecutorError as exc:
            if "already exists" in str(exc) and "different options" not in str(exc):
                return
            raise
        if "clone-from" in opts:
            return
        log.info("Attaching volume and creating filesystem name=%s fstype=%s", name, opts["fstype"])
        try:
            reply = self.client.run("attach", name, timeout=300)
            device = self.devices.path(reply)
            if not wait_for(device):
                log.warning("Exceeded timeout while waiting for device attach to complete")
            fs.mkfs(opts["fstype"], device, name.rpartition("@")[0] or name)
        except (ExecutorError, DeviceNotFound, fs.FsError) as exc:
            self._forget(name)
            raise DriverError(str(exc)) from None
        self.client.run("detach", name)
        log.info("Volume and filesystem created name=%s", name)

    def _forget(self, name):
        """Undo a create whose filesystem could not be made."""
        for cmd in ("detach", "remove"):
            try:
                self.client.run(cmd, name)
            except ExecutorError as exc:
                log.warning("cleanup %s of %s failed: %s", cmd, name, exc)

    def remove(self, name):
        if not self.ready.is_set():
            raise DriverError(f"Plugin initialization in progress. Cannot remove volume={name}")
        try:
            full, _ = self.full_name(name)
        except (DriverError, ExecutorError):
            full = name  # not there: the executor's remove says what it is
        count = self.users(full)
        if count:
            raise DriverError(f"Remove failure - volume is still mounted.  volume={name}, refcount={count}")
        self.client.run("remove", name)

    # -- mounting: attach, find the device, mount --------------------------------------

    def mount_volume(self, full, meta=None):
        meta = meta or self._get(full)
        read_only = meta.get("access") == "read-only"
        fstype = meta.get("fstype") or "ext4"
        reply = self.client.run("attach", full, timeout=300)
        device = self.devices.path(reply)
        if not wait_for(device):
            log.warning("Exceeded timeout while waiting for device attach to complete")
        try:
            if fs.grow_unmounted(device, fstype):
                log.info("The filesystem of %s grew to its volume's size", full)
        except (fs.FsError, OSError) as exc:
            log.warning("%s: %s; it is mounted as it is", full, exc)
        try:
            fs.mount(device, self.target(full), fstype, read_only)
        except fs.FsError:
            self._detach(full)
            raise
        try:
            if fs.grow_mounted(device, self.target(full), fstype, read_only):
                log.info("The filesystem of %s grew to its volume's size", full)
        except (fs.FsError, OSError) as exc:
            log.warning("%s: %s", full, exc)

    def mount_failed(self, full):
        self._detach(full)

    def _detach(self, full):
        log.info("Detaching %s - it is not used anymore", full)
        try:
            self.client.run("detach", full)
        except ExecutorError as exc:
            log.warning("detach of %s failed: %s", full, exc)

    def unmount_volume(self, full):
        try:
            fs.unmount(self.target(full))
        except fs.FsError as exc:
            log.warning("Failed to unmount volume. Now trying to detach... %s", exc)
        self.client.run("detach", full)

    def taken(self, full):
        try:
            return self._get(full).get("attached to this VM") is False
        except (ExecutorError, DriverError) as exc:
            log.warning("Cannot tell whether %s is still attached here (%s): its mount is kept", full, exc)
            return False

    def recover_unmount(self, full):
        fs.unmount(self.target(full))
        self._detach(full)

    def recover_leftover(self, full):
        self._detach(full)
        os.rmdir(self.target(full))

    # -- Path, Get, List ------------------------------------------------------------------

    def path(self, name):
        """Where the volume is mounted, '' while it is not (no executor call)."""
        full = name if name in self.counts else next(
            (f for f in self.counts if f.rpartition("@")[0] == name), None)
        return self.mountpoint(full) if full else ""

    def get(self, name):
        meta = self._get(name)
        full, _ = self.full_name(name, meta)
        if full in self.counts and meta.get("attached to this VM") is False:
            with self._volume(full):  # asked again once a Mount under way is done
                if full in self.counts and self.taken(full):
                    self.drop(full)
        mounted = full in self.counts
        volume = {"Name": name, "Mountpoint": self.mountpoint(full) if mounted else "", "Status": meta}
        created = created_at(meta.get("created"))
        if created:
            volume["CreatedAt"] = created  # Docker reads it from Get only, not from List
        return volume

    def list(self):
        entries = self.client.run("list") or []
        return [{"Name": e["Name"], "Mountpoint": self.mountpoint(e["Name"]) if e["Name"] in self.counts
                 else ""} for e in entries if isinstance(e, dict) and isinstance(e.get("Name"), str)]
