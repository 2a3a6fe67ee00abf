"""Attach and detach: ReconfigVM_Task on ParaVirtual SCSI controllers, one
reconfigure of a VM at a time; every VM's disks from one query."""

import contextlib
import threading
import time

from ...errors import NotFound
from .. import AttachedElsewhere, NotFenced, pvscsi
from .session import TaskFailed, VsphereError, retried


class Devices:
    def _vm_lock(self, vm_uuid):
        """The lock that makes the reconfigures of one VM run one at a time here."""
        with self._vm_locks_guard:
            return self._vm_locks.setdefault(vm_uuid, threading.Lock())

    def _reconfigure(self, target, *changes):
        """Reconfigure a VM's devices; while another client's task holds the VM
        (TaskInProgress), try again for up to a minute."""
        from pyVmomi import vim

        deadline = time.monotonic() + 60
        while True:
            try:
                return self.wait(target.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=list(changes))))
            except TaskFailed as exc:
                if not exc.is_a("TaskInProgress") or time.monotonic() > deadline:
                    raise
            except vim.fault.TaskInProgress:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def _vm_object(self, vm):
        found = self.content.searchIndex.FindByUuid(None, vm.uuid, True, False)
        if found is None:
            raise NotFound(f"Failed to find VM object for {vm.name} (bios {vm.uuid})")
        return found

    def _disks_of_all_vms(self):
        """(vm uuid, disk device, controller, extraConfig) of every disk of every VM, in one query."""
        from pyVmomi import vim

        for _, props in self._retrieve(vim.VirtualMachine, ("config.uuid", "config.hardware.device",
                                                            "config.extraConfig")):
            devices = props.get("config.hardware.device") or []
            controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)}
            for device in devices:
                if isinstance(device, vim.vm.device.VirtualDisk):
                    yield (props.get("config.uuid", "").lower(), device,
                           controllers.get(device.controllerKey), props.get("config.extraConfig"))

    def _reply(self, device, controller, extra_config):
        slot, bus = _pci(controller, extra_config) if controller is not None else ("", "")
        return {"Unit": str(device.unitNumber), "ControllerPciSlotNumber": slot,
                "ControllerPciBusNumber": bus,
                "DiskUuid": getattr(device.backing, "uuid", None) or ""}

    @retried
    def attached_to(self, descriptor):
        for vm_uuid, device, controller, extra in self._disks_of_all_vms():
            if getattr(device.backing, "fileName", None) == descriptor:
                return vm_uuid, self._reply(device, controller, extra)
        return None

    @retried
    def attachments(self):
        """(vm uuid, descriptor, True) of every volume attached to a VM: the VMs'
        devices are the truth here, so a device is never "gone"."""
        return [(vm_uuid, device.backing.fileName, True)
                for vm_uuid, device, _, _ in self._disks_of_all_vms()
                if "] dockvols/" in getattr(device.backing, "fileName", "")]

    @retried
    def holders(self):
        return {device.backing.fileName: (vm_uuid, self._reply(device, controller, extra))
                for vm_uuid, device, controller, extra in self._disks_of_all_vms()
                if "] dockvols/" in getattr(device.backing, "fileName", "")}

    @retried
    def attached_disks(self, vm):
        return [device.backing.fileName for vm_uuid, device, _, _ in self._disks_of_all_vms()
                if vm_uuid == vm.uuid and "] dockvols/" in getattr(device.backing, "fileName", "")]

    @retried
    def attach(self, vm, descriptor):
        """Attach on the lowest free unit of the first PVSCSI controller with
        room, adding a controller when all are full; a disk another VM has is
        refused before any reconfigure (ESX would fail late, on its lock)."""
        with self._vm_lock(vm.uuid):
            return self._attach(vm, descriptor)

    def _attach(self, vm, descriptor):
        from pyVmomi import vim

        holder = self.attached_to(descriptor)
        if holder is not None:
            if holder[0] == vm.uuid:
                return holder[1]
            raise AttachedElsewhere(descriptor, next((v.name for v in self.vms() if v.uuid == holder[0]), None),
                                    holder[0])
        meta = self.read_metadata(descriptor) or {}
        mode = (meta.get("volOpts") or {}).get("attach-as", "independent_persistent")
        target = self._vm_object(vm)
        devices = target.config.hardware.device
        controllers = [d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
        used = {c.busNumber: {d.unitNumber for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
                              and d.controllerKey == c.key}
                for c in controllers if isinstance(c, vim.vm.device.ParaVirtualSCSIController)}
        bus, unit, new = pvscsi.place(used, [c.busNumber for c in controllers])
        if new:
            add = vim.vm.device.VirtualDeviceSpec(
                operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
                device=vim.vm.device.ParaVirtualSCSIController(key=-100 - bus, busNumber=bus,
                                                                sharedBus="noSharing"))
            self._reconfigure(target, add)
            devices = target.config.hardware.device
        controller = next(d for d in devices if isinstance(d, vim.vm.device.ParaVirtualSCSIController)
                          and d.busNumber == bus)
        disk = vim.vm.device.VirtualDisk(
            key=-1, controllerKey=controller.key, unitNumber=unit,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=descriptor, diskMode=mode),
            deviceInfo=vim.Description(label="dockerDataVolume", summary="dockerDataVolume"))
        change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
                                                 device=disk)
        policy = (meta.get("storagePolicy") or {}).get("name")
        if policy is not None and self.is_vcenter:
            change.profile = self._profile_spec(policy)  # the policy's current rules
        try:
            self._reconfigure(target, change)
        except TaskFailed as exc:
            raise VsphereError(f"Failed to attach {descriptor}: {exc}") from None
        found = self.attached_to(descriptor)
        if found is None:
            raise VsphereError(f"Failed to attach {descriptor}: the disk did not appear on VM {vm.name}")
        return found[1]

    @contextlib.contextmanager
    def fenced(self, vm, descriptor):
        """A VM whose guest is gone (VMware Tools' heartbeat not green, or
        powered off) is cut off a disk by the block's detach: the disk is
        hot-removed from it, so its I/O to it fails at the hypervisor."""
        found = self.content.searchIndex.FindByUuid(None, vm.uuid, True, False)
        if found is not None and str(found.runtime.powerState) == "poweredOn" \
                and str(found.guestHeartbeatStatus) == "green":
            raise NotFenced(f"its guest still runs (VMware Tools' heartbeat of VM {vm.name} is green)")
        yield

    @retried
    def detach(self, vm, descriptor):
        """Remove the disk from the VM, keeping its file; not attached there is success."""
        with self._vm_lock(vm.uuid):
            self._detach(vm, descriptor)

    def _detach(self, vm, descriptor):
        from pyVmomi import vim

        target = self._vm_object(vm)
        for device in target.config.hardware.device:
            if isinstance(device, vim.vm.device.VirtualDisk) and \
                    getattr(device.backing, "fileName", None) == descriptor:
                change = vim.vm.device.VirtualDeviceSpec(
                    operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=device)
                try:
                    self._reconfigure(target, change)
                except TaskFailed as exc:
                    raise VsphereError(f"Failed to detach {descriptor}: {exc}") from None


def _pci(controller, extra_config):
    """The controller's PCI slot and the bus the guest sees it on (spec
    esx-service §8.1): the slot from slotInfo or ``scsi<n>.pciSlotNumber``, then
    up the PCI bridges (``pciBridge<n>.pciSlotNumber``) to the root slot."""
    config = {o.key.lower(): str(o.value) for o in extra_config or []}
    slot = getattr(getattr(controller, "slotInfo", None), "pciSlotNumber", None)
    if slot is None:
        slot = config.get(f"scsi{controller.key - 1000}.pcislotnumber")
    if slot is None:
        return "", ""
    slot = root = int(slot)
    bus, func = (root >> 5) & 31, (root >> 10) & 7
    while bus > 0:
        parent = config.get(f"pcibridge{bus - 1}.pcislotnumber")
        if parent is None:
            break
        root = int(parent)
        bus = (root >> 5) & 31
    return str(slot), f"{root:x}.{func}"
