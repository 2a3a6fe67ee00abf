"""Attach and detach on the local backend: a PVSCSI slot recorded for the VM
and a loop device bound to the extent, claimed beside the disk so that every
host sharing the datastore sees which VM has it. The loop device is bound
to the extent file that passed its checks (``vmdkfile.open_extent``), and
never to a file that a loop device of this machine already holds."""

import contextlib
import errno
import json
import os
import time

from ...errors import VmdkopsError
from ...faults import crashpoint
from ...jsonfile import locked_json
from .. import AttachedElsewhere, NotFenced, pvscsi
from . import loopdev, vmdkfile
from .folder import Tampered

CLAIM_SUFFIX = ".lck"
MAX_CLAIM = 64 * 1024
loop_backing_file = loopdev.backing_file


class Devices:
    def _attachments(self):
        os.makedirs(self.layout.root, exist_ok=True)
        return locked_json(os.path.join(self.layout.root, "attachments.json"), dict)

    def _read_attachments(self):
        try:
            with open(os.path.join(self.layout.root, "attachments.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def attached_to(self, descriptor):
        """(vm uuid, device info) of the VM the disk is attached to, or None:
        its claim, which every host sharing the datastore sees."""
        claim = self.read_claim(descriptor)
        if claim is not None:
            return claim["vm"], _device_info(claim)
        path = self._real_descriptor(descriptor)
        for vm_uuid, disks in self._read_attachments().items():  # attached before claims
            for disk in disks:
                if disk["path"] == path:
                    return vm_uuid, _device_info(disk)
        return None

    def _real_descriptor(self, descriptor):
        """The real path of a descriptor, as attachments record it; None when
        its folder is not one (a symlink was put in its place)."""
        try:
            with self._volume(descriptor) as (folder, volume):
                return folder.join(vmdkfile.descriptor_name(volume))
        except (OSError, VmdkopsError):
            return None

    def attached_disks(self, vm):
        """Descriptors of the disks attached to ``vm``."""
        return [disk["path"] for disk in self._read_attachments().get(vm.uuid, [])]

    def _claims(self):
        """(descriptor, claim) of every claim on the datastores."""
        for ds in self.datastores():
            for _, folder in self._volume_folders(ds):
                for name in folder.names():
                    if name.endswith(CLAIM_SUFFIX):
                        claim = _load_claim(folder, name)
                        if claim is not None:
                            yield folder.join(name[:-len(CLAIM_SUFFIX)] + vmdkfile.DESCRIPTOR_SUFFIX), claim

    def attachments(self):
        """(vm uuid, descriptor, whether the device is still there) of every
        attachment of this host; a claim of this host that no attachment
        records (an attach interrupted after its claim) has no device."""
        found = [(vm_uuid, disk["path"], loop_backing_file(disk["device"]) == disk["extent"])
                 for vm_uuid, disks in self._read_attachments().items() for disk in disks]
        recorded = {path for _, path, _ in found}
        for descriptor, claim in self._claims():
            if claim.get("host") == self.host_id and descriptor not in recorded:
                found.append((claim["vm"], descriptor, False))
        return found

    def holders(self):
        found = {}
        for vm_uuid, disks in self._read_attachments().items():  # attached before claims
            for disk in disks:
                found[disk["path"]] = (vm_uuid, _device_info(disk))
        for descriptor, claim in self._claims():
            found[descriptor] = (claim["vm"], _device_info(claim))
        return found

    def stray_devices(self):
        """Loop devices on one of our extents that no attachment records (an
        attach interrupted between binding and its record); a device another
        installation on this machine has claimed is its own."""
        recorded = {disk["device"] for disks in self._read_attachments().values() for disk in disks}
        roots = [os.path.realpath(os.path.join(ds.path, "dockvols")) + os.sep for ds in self.datastores()]
        stray = []
        for device in loopdev.bound():
            extent = loop_backing_file(device)
            if (device not in recorded and extent and extent.endswith(vmdkfile.EXTENT_SUFFIX)
                    and any(extent.startswith(root) for root in roots)):
                claim = self.read_claim(extent[:-len(vmdkfile.EXTENT_SUFFIX)] + vmdkfile.DESCRIPTOR_SUFFIX)
                if claim is None or claim.get("host") == self.host_id:
                    stray.append((device, extent))
        return stray

    def release_device(self, device, extent):
        loopdev.detach(device, extent)

    def attach(self, vm, descriptor):
        """Attach to ``vm``: the same VM again gets its existing slot; a disk
        on another VM (of this host or, by its claim, of another host sharing
        the datastore) is refused, and nothing is left changed."""
        if self.powered_off(vm.uuid):
            raise VmdkopsError(f"VM {vm.name} is powered off")
        with self._volume(descriptor) as (folder, volume):
            fd, _ = vmdkfile.open_extent(folder, volume, os.O_RDWR)
            try:
                return self._attach(vm, folder, volume, fd)
            finally:
                os.close(fd)

    def _attach(self, vm, folder, volume, fd):
        path = folder.join(vmdkfile.descriptor_name(volume))
        with self._attachments() as state:
            for vm_uuid, disks in state.items():
                for disk in disks:
                    if disk["path"] == path:
                        if vm_uuid == vm.uuid:
                            return _device_info(disk)
                        raise AttachedElsewhere(path, (self.read_claim(path) or {}).get("vmName")
                                                or self._vm_name(vm_uuid), vm_uuid)
            claim = _load_claim(folder, volume + CLAIM_SUFFIX)
            if claim is not None:
                raise AttachedElsewhere(path, claim.get("vmName"), claim["vm"])
            holding = loopdev.holding(os.fstat(fd))
            if holding:
                claim = _claim_to_come(folder, volume)
                if claim is not None:
                    raise AttachedElsewhere(path, claim.get("vmName"), claim["vm"])
                raise VmdkopsError(f"Volume {volume}: its extent is in use by {', '.join(holding)} on "
                                   "this host; it is not attached a second time")
            disks = state.setdefault(vm.uuid, [])
            used = {}
            for disk in disks:
                used.setdefault(disk["bus"], set()).add(disk["unit"])
            used.setdefault(0, set())
            bus, unit, _ = pvscsi.place(used)
            # Read-write, as ESX attaches: a read-only volume is mounted read-only
            # by the guest (which must format it at create first).
            device = loopdev.attach(fd)
            crashpoint("attach:losetup")
            disk = {"path": path, "extent": folder.join(vmdkfile.extent_name(volume)), "bus": bus,
                    "unit": unit, "device": device}
            try:
                folder.write_whole(volume + CLAIM_SUFFIX, json.dumps(
                    dict(disk, vm=vm.uuid, vmName=vm.name, host=self.host_id)).encode(), replace=False)
            except FileExistsError:
                # The first of two hosts attaching at once wins.
                loopdev.detach(device, disk["extent"])
                claim = _load_claim(folder, volume + CLAIM_SUFFIX) or {}
                raise AttachedElsewhere(path, claim.get("vmName"), claim.get("vm", "?")) from None
            crashpoint("attach:claim")
            disks.append(disk)
            return _device_info(disk)

    def _vm_name(self, vm_uuid):
        return next((v.name for v in self.vms() if v.uuid == vm_uuid), None)

    def detach(self, vm, descriptor):
        """Detach from ``vm``; a disk the VM does not have is not an error.
        Only the VM's own records and its own claim are touched."""
        path = self._real_descriptor(descriptor)
        with self._attachments() as state:
            disks = state.get(vm.uuid, [])
            for disk in list(disks):
                if disk["path"] == path:
                    loopdev.detach(disk["device"], disk["extent"])
                    disks.remove(disk)
            if not disks:
                state.pop(vm.uuid, None)
            with contextlib.suppress(OSError, Tampered, VmdkopsError), \
                    self._volume(descriptor) as (folder, volume):
                claim = _load_claim(folder, volume + CLAIM_SUFFIX)
                if claim is not None and claim["vm"] == vm.uuid:
                    folder.unlink(volume + CLAIM_SUFFIX, missing_ok=True)

    @contextlib.contextmanager
    def fenced(self, vm, descriptor):
        """A VM of this host is cut off a disk when no mount holds its loop
        device: the device is opened exclusively (no mount can take it from
        then on) and held so while the block detaches it. Another host's
        device is not this host's to check."""
        path = self._real_descriptor(descriptor)
        disk = next((d for d in self._read_attachments().get(vm.uuid, []) if d["path"] == path), None)
        if disk is None:
            raise NotFenced(f"VM {vm.name} has it on another host")
        if loop_backing_file(disk["device"]) != disk["extent"]:
            yield  # its device is gone already
            return
        try:
            fd = os.open(disk["device"], os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise NotFenced(f"its device {disk['device']} is still mounted on VM {vm.name}") from None
            raise
        try:
            yield
        finally:
            os.close(fd)
        # The detach let go of the device at this last close.
        deadline = time.monotonic() + 2
        while loop_backing_file(disk["device"]) == disk["extent"] and time.monotonic() < deadline:
            time.sleep(0.02)

    def read_claim(self, descriptor):
        """The claim of an attached disk: which VM of which host has it, on
        which slot and device. It lives beside the disk, so every host that
        shares the datastore sees it (as ESX hosts see each other's disk locks)."""
        try:
            with self._volume(descriptor) as (folder, volume):
                return _load_claim(folder, volume + CLAIM_SUFFIX)
        except (OSError, Tampered, VmdkopsError):
            return None


def _load_claim(folder, name):
    try:
        claim = json.loads(folder.read(name, MAX_CLAIM))
    except (OSError, ValueError, Tampered):
        return None
    return claim if isinstance(claim, dict) and isinstance(claim.get("vm"), str) else None


def _claim_to_come(folder, volume, wait=2.0):
    """The claim of a disk that another installation on this machine is
    attaching (it binds its loop device, then claims), once it is written."""
    deadline = time.monotonic() + wait
    while True:
        claim = _load_claim(folder, volume + CLAIM_SUFFIX)
        if claim is not None or time.monotonic() > deadline:
            return claim
        time.sleep(0.05)


def _device_info(disk):
    """The original's attach reply, plus the device path a local guest uses."""
    slot = 160 + 32 * disk["bus"]
    return {"Unit": str(disk["unit"]), "ControllerPciSlotNumber": str(slot),
            "ControllerPciBusNumber": "0.0", "Device": disk["device"]}
