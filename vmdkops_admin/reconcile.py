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

from .backends import VirtualMachine
from .db.models import Volume, VmGroup
from .volumes import mark_detached


@dataclass(frozen=True)
class Finding:
    volume: str
    problem: str
    action: str  # what was done, or "reported"


def _volume_name(backend, descriptor):
    datastore, volume = backend.volume_of(descriptor)
    return f"{volume}@{datastore.name}" if datastore else descriptor


def reconcile(session, backend, dry_run=False, adopt=False):
    """Findings, in the order they were dealt with. ``session`` is None without
    a config DB. ``adopt`` first gives our metadata to the original VDVS's volumes."""
    findings = []

    def found(volume, problem, action):
        findings.append(Finding(volume, problem, "would " + action if dry_run and action != "reported"
                                else action))
        return not dry_run and action != "reported"

    if adopt:
        from .legacy import adopt as adopt_volumes

        adopt_volumes(backend, dry_run, found)
    busy = _leftovers(backend, found)
    _attachments(backend, found)
    if session is not None:
        _index(session, backend, found, busy)
    _sidecars(backend, found)
    if session is not None and not dry_run:
        session.commit()
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


def _attachments(backend, found):
    for vm_uuid, descriptor, device_present in backend.attachments():
        vm = backend.find_vm(vm_uuid)
        problem = ("its device is gone" if not device_present else
                   None if vm else f"attached to VM {vm_uuid}, which is gone")
        if problem and found(_volume_name(backend, descriptor), problem, "detached"):
            stand_in = vm or VirtualMachine(vm_uuid, vm_uuid, "")
            backend.detach(stand_in, descriptor)
            mark_detached(backend, descriptor, stand_in)
    for device, extent in backend.stray_devices():
        if found(extent, f"{device} is attached but not recorded", "released"):
            backend.release_device(device, extent)


def _index(session, backend, found, busy):
    groups = {g.id: g for g in session.scalars(select(VmGroup))}
    by_uuid = {g.uuid: g for g in groups.values()}
    rows = {}
    for row in session.scalars(select(Volume)):
        rows[(row.datastore_url, groups[row.vmgroup_id].uuid, row.name)] = row
    for ds in backend.datastores():
        for group_uuid, volume, descriptor in list(backend.volume_files(ds)):
            full = f"{volume}@{ds.name}"
            row = rows.pop((ds.url, group_uuid, volume), None)
            meta = backend.read_metadata(descriptor)
            if row is not None:
                _indexed_disk(session, backend, row, descriptor, meta, full, found)
            elif group_uuid not in by_uuid:
                found(full, "on disk in a folder of no known vmgroup" if group_uuid
                      else "on disk outside any vmgroup folder", "reported")
            elif meta is None:
                found(full, "on disk without metadata (side-car)", "reported")
            elif found(full, "on disk but not in the index", "indexed"):
                session.add(_row_from(backend, by_uuid[group_uuid], ds, volume, descriptor, meta))
    for (url, _, name), row in rows.items():
        ds = backend.datastore_by_url(url)
        full = f"{name}@{ds.name}" if ds else f"{name}@{url}"
        if ds is None:
            found(full, "in the index on a datastore that is gone", "reported")
        elif backend.descriptor(ds, groups[row.vmgroup_id].uuid, name) in busy:
            continue  # being created now
        elif found(full, f"in the index ({row.state}) but not on disk", "removed from the index"):
            session.delete(row)
    session.flush()


def _indexed_disk(session, backend, row, descriptor, meta, full, found):
    if row.state == "removing":
        if found(full, "remove was interrupted", "removed"):
            backend.delete_disk(descriptor)
            session.delete(row)
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
    capacity_mb = -(-backend.disk_info(descriptor)[0] // (1024 * 1024))
    if row.size_mb != capacity_mb and found(
            full, f"index says {row.size_mb} MB, the disk has {capacity_mb} MB", "size corrected"):
        row.size_mb = capacity_mb
    holder = backend.attached_to(descriptor)
    attached = holder[0] if holder else None
    if row.attached_vm_uuid != attached and found(
            full, f"index says attached to {row.attached_vm_uuid or 'nothing'}",
            f"set to {attached or 'detached'}"):
        row.attached_vm_uuid = attached


def _row_from(backend, group, ds, volume, descriptor, meta):
    capacity, _ = backend.disk_info(descriptor)
    holder = backend.attached_to(descriptor)
    return Volume(vmgroup_id=group.id, datastore_url=ds.url, name=volume,
                  size_mb=-(-capacity // (1024 * 1024)), options=meta.get("volOpts") or {},
                  state="ready", attached_vm_uuid=holder[0] if holder else None,
                  created=_created(meta.get("created")), created_by=meta.get("created-by"))


def _created(text):
    try:
        return datetime.fromtimestamp(calendar.timegm(time.strptime(text)),
                                      timezone.utc).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def _sidecars(backend, found):
    """Side-cars say what the backend's attachments are."""
    for ds in backend.datastores():
        for _, volume, descriptor in list(backend.volume_files(ds)):
            meta = backend.read_metadata(descriptor)
            if meta is None:
                continue
            holder = backend.attached_to(descriptor)
            full = f"{volume}@{ds.name}"
            if meta.get("status") == "attached" and holder is None:
                if found(full, "metadata says attached, but it is not", "marked detached"):
                    vm = VirtualMachine(meta.get("attachedVMName") or "", meta.get("attachedVMUuid") or "", "")
                    mark_detached(backend, descriptor, vm)
            elif holder and (meta.get("status") != "attached" or meta.get("attachedVMUuid") != holder[0]):
                if found(full, "metadata does not name the VM it is attached to", "marked attached"):
                    vm = backend.find_vm(holder[0])
                    meta.update({"status": "attached", "attachedVMUuid": holder[0],
                                 "attachedVMName": vm.name if vm else holder[0],
                                 "attachedVMDevice": holder[1]})
                    backend.write_metadata(descriptor, meta)
