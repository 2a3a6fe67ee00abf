"""Finding the block device of a disk that was just attached. On the local
backend the executor names it; in a real ESX guest it is computed from the
attach reply (the controller's PCI bus and the disk's unit, spec plugin
§3.3) or from the disk's UUID, under a ``/sys`` and ``/dev`` that a test can
point elsewhere."""

import os
import time


class DeviceNotFound(Exception):
    def __init__(self):
        super().__init__("Device not found")


class LocalDevices:
    """The local backend's attach reply carries the device path."""

    def path(self, reply):
        device = reply.get("Device") if isinstance(reply, dict) else None
        if not isinstance(device, str) or not device.startswith("/dev/"):
            raise DeviceNotFound()
        return device


class EsxDevices:
    """A PVSCSI disk in an ESX guest: ``/dev/disk/by-path/pci-<bus>:00.0-scsi-0:0:<unit>:0``,
    where ``<bus>`` is the first bus behind the controller's PCI bridge; or
    ``/dev/disk/by-id/wwn-0x<uuid>`` when the reply carries the disk's uuid."""

    def __init__(self, sys_root="/sys", dev_root="/dev"):
        self.sys_root = sys_root
        self.dev_root = dev_root

    def path(self, reply):
        if not isinstance(reply, dict):
            raise DeviceNotFound()
        disk_uuid = reply.get("DiskUuid")
        if isinstance(disk_uuid, str) and disk_uuid:
            wwn = "".join(c for c in disk_uuid.lower() if c in "0123456789abcdef")
            return os.path.join(self.dev_root, "disk", "by-id", f"wwn-0x{wwn}")
        bus, unit = reply.get("ControllerPciBusNumber"), reply.get("Unit")
        if not isinstance(bus, str) or not isinstance(unit, str) or not unit.isdigit():
            raise DeviceNotFound()
        bridge = os.path.join(self.sys_root, "bus", "pci", "devices", f"0000:00:{bus}", "pci_bus")
        try:
            entries = sorted(os.listdir(bridge))
        except OSError:
            raise DeviceNotFound() from None
        if not entries:
            raise DeviceNotFound()
        return os.path.join(self.dev_root, "disk", "by-path",
                            f"pci-{entries[0]}:00.0-scsi-0:0:{unit}:0")


def wait_for(path, timeout=10.0, interval=0.05):
    """Wait until the device appears; True if it did in time."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
