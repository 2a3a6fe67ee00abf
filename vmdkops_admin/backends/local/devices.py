"""Attach and detach on the local backend: a PVSCSI slot recorded for the VM
and a loop device on the extent, claimed beside the disk so that every host
sharing the datastore sees which VM has it."""

import contextlib
import fcntl
import glob
import json
import os
import subprocess

from ...errors import VmdkopsError
from ...faults import crashpoint
from ...jsonfile import locked_json
from ...paths import DOCKVOLS
from .. import AttachedElsewhere, pvscsi, vmdkfile

CLAIM_SUFFIX = ".lck"


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
        path = os.path.realpath(descriptor)
        claim = read_claim(path)
        if claim is not None:
            return claim["vm"], _device_info(claim)
        for vm_uuid, disks in self._read_attachments().items():  # attached before claims
            for disk in disks:
                if disk["path"] == path:
                    return vm_uuid, _device_info(disk)
        return None

    def attached_disks(self, vm):
        """Descriptors of the disks attached to ``vm``."""
        return [disk["path"] for disk in self._read_attachments().get(vm.uuid, [])]

    def attachments(self):
        """(vm uuid, descriptor, whether the device is still there) of every
        attachment of this host; a claim of this host that no attachment
        records (an attach interrupted after its claim) has no device."""
        found = [(vm_uuid, disk["path"], loop_backing_file(disk["device"]) == disk["extent"])
                 for vm_uuid, disks in self._read_attachments().items() for disk in disks]
        recorded = {path for _, path, _ in found}
        host = self.host_id
        for ds in self.datastores():
            for claim_file in glob.glob(os.path.join(glob.escape(ds.path), DOCKVOLS, "*", "*" + CLAIM_SUFFIX)):
                descriptor = claim_file[:-len(CLAIM_SUFFIX)] + ".vmdk"
                claim = read_claim(descriptor)
                if claim and claim.get("host") == host and os.path.realpath(descriptor) not in recorded:
                    found.append((claim["vm"], os.path.realpath(descriptor), False))
        return found

    def holders(self):
        found = {}
        for vm_uuid, disks in self._read_attachments().items():  # attached before claims
            for disk in disks:
                found[disk["path"]] = (vm_uuid, _device_info(disk))
        for ds in self.datastores():
            for claim_file in glob.glob(os.path.join(glob.escape(ds.path), DOCKVOLS, "*", "*" + CLAIM_SUFFIX)):
                descriptor = os.path.realpath(claim_file[:-len(CLAIM_SUFFIX)] + ".vmdk")
                claim = read_claim(descriptor)
                if claim is not None:
                    found[descriptor] = (claim["vm"], _device_info(claim))
        return found

    def stray_devices(self):
        """Loop devices on one of our extents that no attachment records (an
        attach interrupted between losetup and its record); a device another
        installation on this machine has claimed is its own."""
        recorded = {disk["device"] for disks in self._read_attachments().values() for disk in disks}
        roots = [os.path.realpath(os.path.join(ds.path, DOCKVOLS)) + os.sep for ds in self.datastores()]
        stray = []
        for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
            device = "/dev/" + backing.split("/")[3]
            extent = loop_backing_file(device)
            if (device not in recorded and extent and extent.endswith(vmdkfile.EXTENT_SUFFIX)
                    and any(extent.startswith(root) for root in roots)):
                claim = read_claim(extent[:-len(vmdkfile.EXTENT_SUFFIX)] + ".vmdk")
                if claim is None or claim.get("host") == self.host_id:
                    stray.append((device, extent))
        return stray

    def release_device(self, device, extent):
        _release_loop({"device": device, "extent": extent, "path": extent})

    def attach(self, vm, descriptor):
        """Attach to ``vm``: the same VM again gets its existing slot; a disk
        on another VM (of this host or, by its claim, of another host sharing
        the datastore) is refused, and nothing is left changed."""
        if self.powered_off(vm.uuid):
            raise VmdkopsError(f"VM {vm.name} is powered off")
        path = os.path.realpath(descriptor)
        _, extent = vmdkfile.read_extent(path)
        with self._attachments() as state:
            for vm_uuid, disks in state.items():
                for disk in disks:
                    if disk["path"] == path:
                        if vm_uuid == vm.uuid:
                            return _device_info(disk)
                        raise AttachedElsewhere(descriptor, (read_claim(path) or {}).get("vmName")
                                                or self._vm_name(vm_uuid), vm_uuid)
            claim = read_claim(path)
            if claim is not None:
                raise AttachedElsewhere(descriptor, claim.get("vmName"), claim["vm"])
            disks = state.setdefault(vm.uuid, [])
            used = {}
            for disk in disks:
                used.setdefault(disk["bus"], set()).add(disk["unit"])
            used.setdefault(0, set())
            bus, unit, _ = pvscsi.place(used)
            # Read-write, as ESX attaches: a read-only volume is mounted read-only
            # by the guest (which must format it at create first).
            device = _losetup(["--find", "--show", extent])
            crashpoint("attach:losetup")
            disk = {"path": path, "extent": os.path.realpath(extent), "bus": bus, "unit": unit,
                    "device": device}
            try:
                _claim(path, dict(disk, vm=vm.uuid, vmName=vm.name, host=self.host_id))
            except FileExistsError:
                _release_loop(disk)
                claim = read_claim(path) or {}
                raise AttachedElsewhere(descriptor, claim.get("vmName"), claim.get("vm", "?")) from None
            crashpoint("attach:claim")
            disks.append(disk)
            return _device_info(disk)

    def _vm_name(self, vm_uuid):
        return next((v.name for v in self.vms() if v.uuid == vm_uuid), None)

    def detach(self, vm, descriptor):
        """Detach from ``vm``; a disk the VM does not have is not an error."""
        path = os.path.realpath(descriptor)
        with self._attachments() as state:
            disks = state.get(vm.uuid, [])
            for disk in list(disks):
                if disk["path"] == path:
                    _release_loop(disk)
                    disks.remove(disk)
            if not disks:
                state.pop(vm.uuid, None)
            claim = read_claim(path)
            if claim is not None and claim["vm"] == vm.uuid:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path[:-len(".vmdk")] + CLAIM_SUFFIX)


def read_claim(descriptor):
    """The claim of an attached disk: which VM of which host has it, on which
    slot and device. It lives beside the disk, so every host that shares
    the datastore sees it (as ESX hosts see each other's disk locks)."""
    try:
        with open(descriptor[:-len(".vmdk")] + CLAIM_SUFFIX) as f:
            claim = json.load(f)
    except (OSError, ValueError):
        return None
    return claim if isinstance(claim, dict) and isinstance(claim.get("vm"), str) else None


def _claim(descriptor, claim):
    """Write a whole claim, or ``FileExistsError`` if the disk has one: the
    first of two hosts attaching at once wins."""
    target = descriptor[:-len(".vmdk")] + CLAIM_SUFFIX
    tmp = vmdkfile.temporary_name(target)
    with open(tmp, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        json.dump(claim, f)
        f.flush()
        os.fsync(f.fileno())
        try:
            os.link(tmp, target)
        finally:
            os.unlink(tmp)


def _device_info(disk):
    """The original's attach reply, plus the device path a local guest uses."""
    slot = 160 + 32 * disk["bus"]
    return {"Unit": str(disk["unit"]), "ControllerPciSlotNumber": str(slot),
            "ControllerPciBusNumber": "0.0", "Device": disk["device"]}


def _losetup(args):
    result = subprocess.run(["losetup"] + args, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise VmdkopsError(f"Failed to attach disk: {result.stderr.strip() or 'losetup failed'}")
    return result.stdout.strip()


def loop_backing_file(device):
    """The file behind a loop device, or None when it is not attached."""
    name = os.path.basename(device)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().strip().removesuffix(" (deleted)")
    except OSError:
        return None


def _release_loop(disk):
    # Only the device we attached, and only while it still backs our extent:
    # other processes on the machine use loop devices too.
    if loop_backing_file(disk["device"]) == disk["extent"]:
        result = subprocess.run(["losetup", "--detach", disk["device"]], capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0 and loop_backing_file(disk["device"]) == disk["extent"]:
            raise VmdkopsError(f"Failed to detach {disk['path']}: {result.stderr.strip()}")
