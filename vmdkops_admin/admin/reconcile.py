"""Bring the DB index, the side-cars, the disk files and the attachments back
into agreement (DESIGN D2) after a crash, a lost DB or a VM that went away.

What is safe is repaired: an interrupted create is finished (disk and
metadata complete) or undone, an interrupted remove is finished, index rows
of disks that are gone are dropped, disks of known vmgroups missing from the
index are indexed from their side-cars, attachments of devices or VMs that
are gone are released, and side-cars follow the real attachments. What is
not safe (disks without metadata, disks of unknown vmgroups) is reported."""

import calendar
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select

from ..backends import VirtualMachine
from ..db.models import VmGroup, Volume
from ..executor.detach import mark_detached
from ..progress import Progress


@dataclass(frozen=True)
class Finding:
    volume: str
    problem: str
    action: str  # what was done, or "reported"


class _Snapshot:
    """What the backend says, asked once per reconcile: the datastores, the
    VMs, the disks of each datastore (one listing each), who holds each disk
    (one query) and, only where needed, side-cars. So the round trips to the
    storage layer do not grow with the number of volumes."""

    def __init__(self, backend):
        self.backend = backend
        self.datastores = backend.datastores()
        self.vms = {vm.uuid.lower(): vm for vm in backend.vms()}
        self._metadata = {}
        self.disks = self.holders = None
        self.progress = Progress(0)

    def read_disks(self):
        self.disks = {ds.url: self.backend.disks(ds) for ds in self.datastores}
        self.holders = self.backend.holders()

    def name_of(self, descriptor):
        for ds in self.datastores:
            for disk in (self.disks or {}).get(ds.url, ()):
                if disk.descriptor == descriptor:
                    return f"{disk.volume}@{ds.name}"
        datastore, _, volume = self.backend.volume_of(descriptor)
        return f"{volume}@{datastore.name}" if datastore else descriptor

    def metadata(self, descriptor):
        if descriptor not in self._metadata:
            self._metadata[descriptor] = self.backend.read_metadata(descriptor)
        return self._metadata[descriptor]

    def capacity_mb(self, disk):
        """The disk's size in MB: the listing's, else the side-car's record
        if it was read anyway, else None (unknown)."""
        if disk.capacity is not None:
            return -(-disk.capacity // (1024 * 1024))
        meta = self._metadata.get(disk.descriptor)
        return int(meta["capacityMB"]) if meta and str(meta.get("capacityMB", "")).isdigit() else None

    def vm_name(self, vm_uuid):
        vm = self.vms.get(vm_uuid.lower())
        return vm.name if vm else vm_uuid


def reconcile(session, backend, dry_run=False, adopt=False, progress=None):
    """Findings, in the order they were dealt with. ``session`` is None without
    a config DB. ``adopt`` first gives our metadata to the original VDVS's
    volumes. ``progress(done, total)`` hears of each disk checked."""
    findings = []

    def found(volume, problem, action):
        findings.append(Finding(volume, problem, "would " + action if dry_run and action != "reported"
                                else action))
        return not dry_run and action != "reported"

    if adopt:
        from .legacy import adopt as adopt_volumes

        adopt_volumes(backend, dry_run, found)
    snapshot = _Snapshot(backend)
    busy = _leftovers(backend, found)
    _attachments(backend, snapshot, found)
    snapshot.read_disks()
    passes = 2 if session is not None else 1
    snapshot.progress = Progress(passes * sum(len(disks) for disks in snapshot.disks.values()), progress)
    for ds in snapshot.datastores:
        for disk in snapshot.disks[ds.url]:
            if disk.problem:
                found(f"{disk.volume}@{ds.name}", disk.problem, "reported")
    agreed = set()
    if session is not None:
        agreed = _index(session, snapshot, found, busy)
    _sidecars(snapshot, found, agreed)
    return findings


def _leftovers(backend, found):
    """Remove the files of interrupted creates and removes; the descriptors
    of creates still in progress (their files are locked), which are left alone."""
    busy = set()
    for leftover in backend.leftover_files():
        if leftover.busy:
            busy.add(leftover.descriptor)
        elif found(f"{leftover.volume}@{leftover.datastore.name}",
                   f"{os.path.basename(leftover.path)} was left by an interrupted create or remove",
                   "removed"):
            backend.remove_leftover(leftover)
    return busy


def _attachments(backend, snapshot, found):
    for vm_uuid, descriptor, device_present in backend.attachments():
        vm = snapshot.vms.get(vm_uuid.lower())
        problem = ("its device is gone" if not device_present else
                   None if vm else f"attached to VM {vm_uuid}, which is gone")
        if problem and found(snapshot.name_of(descriptor), problem, "detached"):
            stand_in = vm or VirtualMachine(vm_uuid, vm_uuid, "")
            backend.detach(stand_in, descriptor)
            mark_detached(backend, descriptor, stand_in)
    for device, extent in backend.stray_devices():
        if found(extent, f"{device} is attached but not recorded", "released"):
            backend.release_device(device, extent)


def _index(session, snapshot, found, busy):
    """Index rows against the disks; the descriptors whose row, disk and
    holder agree (their side-cars need no reading)."""
    backend = snapshot.backend
    groups = {g.id: g for g in session.scalars(select(VmGroup))}
    by_uuid = {g.uuid: g for g in groups.values()}
    rows = {}
    for row in session.scalars(select(Volume)):
        rows[(row.datastore_url, groups[row.vmgroup_id].uuid, row.name)] = row
    agreed = set()
    for ds in snapshot.datastores:
        for disk in snapshot.disks[ds.url]:
            snapshot.progress.advance()
            full = f"{disk.volume}@{ds.name}"
            row = rows.pop((ds.url, disk.vmgroup_uuid, disk.volume), None)
            holder = snapshot.holders.get(disk.descriptor)
            if disk.problem:
                continue  # reported: nothing is done with a disk whose files fail their checks
            if row is not None and row.state == "ready" and row.options and \
                    row.attached_vm_uuid == (holder[0] if holder else None):
                agreed.add(disk.descriptor)
                _size(row, snapshot.capacity_mb(disk), full, found)
            elif row is not None:
                _indexed_disk(session, snapshot, row, disk, holder, full, found)
            elif disk.vmgroup_uuid not in by_uuid:
                found(full, "on disk in a folder of no known vmgroup" if disk.vmgroup_uuid
                      else "on disk outside any vmgroup folder", "reported")
            elif snapshot.metadata(disk.descriptor) is None:
                found(full, "on disk without metadata (side-car)", "reported")
            elif found(full, "on disk but not in the index", "indexed"):
                session.add(_row_from(snapshot, by_uuid[disk.vmgroup_uuid], ds, disk, holder))
    for (url, _, name), row in rows.items():
        ds = next((d for d in snapshot.datastores if d.url == url), None)
        full = f"{name}@{ds.name}" if ds else f"{name}@{url}"
        if ds is None:
            found(full, "in the index on a datastore that is gone", "reported")
        elif backend.descriptor(ds, groups[row.vmgroup_id].uuid, name) in busy:
            continue  # being created now
        elif found(full, f"in the index ({row.state}) but not on disk", "removed from the index"):
            session.delete(row)
    session.flush()
    return agreed


def _indexed_disk(session, snapshot, row, disk, holder, full, found):
    backend, descriptor = snapshot.backend, disk.descriptor
    meta = snapshot.metadata(descriptor)
    if row.state == "removing":
        if found(full, "remove was interrupted", "removed"):
            backend.delete_disk(descriptor)
            session.delete(row)
        return
    if row.state == "resizing":
        capacity_mb = snapshot.capacity_mb(disk) or backend.disk_info(descriptor)[0] // (1024 * 1024)
        if found(full, "resize was interrupted", f"settled at {capacity_mb} MB"):
            row.state, row.size_mb = "ready", capacity_mb
            if meta is not None and meta.get("capacityMB") != capacity_mb:
                backend.write_metadata(descriptor, dict(meta, capacityMB=capacity_mb))
        return
    if row.state == "creating":
        if meta is None:
            if found(full, "create was interrupted", "undone"):
                backend.delete_disk(descriptor)
                session.delete(row)
            return
        if found(full, "create was interrupted after the disk was made", "finished"):
            row.state = "ready"
    if meta is not None and not row.options and meta.get("volOpts") and found(
            full, "index has no options (an imported record)", "filled from metadata"):
        row.options = meta["volOpts"]
        row.created = row.created or _created(meta.get("created"))
        row.created_by = row.created_by or meta.get("created-by")
    _size(row, snapshot.capacity_mb(disk), full, found)
    attached = holder[0] if holder else None
    if row.attached_vm_uuid != attached and found(
            full, f"index says attached to {row.attached_vm_uuid or 'nothing'}",
            f"set to {attached or 'detached'}"):
        row.attached_vm_uuid = attached


def _size(row, capacity_mb, full, found):
    if capacity_mb is not None and row.size_mb != capacity_mb and found(
            full, f"index says {row.size_mb} MB, the disk has {capacity_mb} MB", "size corrected"):
        row.size_mb = capacity_mb


def _row_from(snapshot, group, ds, disk, holder):
    meta = snapshot.metadata(disk.descriptor)
    capacity_mb = snapshot.capacity_mb(disk)
    if capacity_mb is None:
        capacity_mb = -(-snapshot.backend.disk_info(disk.descriptor)[0] // (1024 * 1024))
    return Volume(vmgroup_id=group.id, datastore_url=ds.url, name=disk.volume,
                  size_mb=capacity_mb, options=meta.get("volOpts") or {},
                  state="ready", attached_vm_uuid=holder[0] if holder else None,
                  created=_created(meta.get("created")), created_by=meta.get("created-by"))


def _created(text):
    try:
        return datetime.fromtimestamp(calendar.timegm(time.strptime(text)),
                                      timezone.utc).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def _sidecars(snapshot, found, agreed):
    """Side-cars say what the backend's attachments are (read where the
    index did not already agree with the disk and its holder)."""
    backend = snapshot.backend
    for ds in snapshot.datastores:
        for disk in snapshot.disks[ds.url]:
            snapshot.progress.advance()
            if disk.descriptor in agreed or disk.problem:
                continue
            meta = snapshot.metadata(disk.descriptor)
            if meta is None:
                continue
            holder = snapshot.holders.get(disk.descriptor)
            full = f"{disk.volume}@{ds.name}"
            if meta.get("status") == "attached" and holder is None:
                if found(full, "metadata says attached, but it is not", "marked detached"):
                    vm = VirtualMachine(meta.get("attachedVMName") or "", meta.get("attachedVMUuid") or "", "")
                    mark_detached(backend, disk.descriptor, vm)
            elif holder and (meta.get("status") != "attached" or meta.get("attachedVMUuid") != holder[0]):
                if found(full, "metadata does not name the VM it is attached to", "marked attached"):
                    meta.update({"status": "attached", "attachedVMUuid": holder[0],
                                 "attachedVMName": snapshot.vm_name(holder[0]),
                                 "attachedVMDevice": holder[1]})
                    backend.write_metadata(disk.descriptor, meta)
