"""The administrator's view of volumes: the listing (from the DB index, with
one directory scan per datastore to show disks the index does not know and
at most one stat per volume for the space used), editing a volume's access
and attach mode, removing a vmgroup's volumes, and force-detaching.

The listing runs plain SQL through whatever executes it (a stdlib sqlite3
connection, or SQLAlchemy's core on PostgreSQL): it is the hot path of
``volume ls``, and importing SQLAlchemy's ORM alone would cost more than
listing 10,000 volumes."""

import fnmatch
import functools
import json
import re
import time
from datetime import datetime

from ..backends import datastore_names
from ..errors import VM_NOT_FOUND, InvalidArgument, NotFound, VmdkopsError
from ..names import DEFAULT_VMGROUP, DEFAULT_VMGROUP_UUID
from ..sizes import human_size

# -c choices -> (header, record key), in the canonical column order.
COLUMNS = (("volume", "Volume", "volume"), ("datastore", "Datastore", "datastore"),
           ("vmgroup", "VMGroup", "vmgroup"), ("capacity", "Capacity", "capacity_mb"),
           ("used", "Used", "used_mb"), ("fstype", "Filesystem", "fstype"),
           ("policy", "Policy", "policy"), ("disk-format", "Disk Format", "disk_format"),
           ("attached-to", "Attached-to", "attached_to"), ("access", "Access", "access"),
           ("attach-as", "Attach-as", "attach_as"), ("created-by", "Created By", "created_by"),
           ("created", "Created Date", "created"), ("taken-over", "Taken Over", "taken_over"))
EDITABLE = {"access": ("read-write", "read-only"),
            "attach-as": ("independent_persistent", "persistent")}


def _record(descriptor, volume, datastore, vmgroup, options, capacity_mb, attached_to, created_by,
            created):
    # "_descriptor" is for the listing's own use; renderers show only column keys.
    return {"_descriptor": descriptor, "volume": volume, "datastore": datastore, "vmgroup": vmgroup,
            "capacity_mb": capacity_mb, "used_mb": None, "fstype": options.get("fstype"),
            "policy": options.get("vsan-policy-name"), "disk_format": options.get("diskformat"),
            "attached_to": attached_to, "access": options.get("access", "read-write"),
            "attach_as": options.get("attach-as", "independent_persistent"),
            "created_by": created_by, "created": created, "taken_over": None}


def _iso(asctime_text):
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(asctime_text))
    except (TypeError, ValueError):
        return None


def _unindexed(backend, datastores, indexed, vm_names, vmgroups):
    """Records of the disks the index does not know: orphans, and every disk
    without a config DB (their side-cars say what they are)."""
    records = []
    for ds in datastores:
        for group_uuid, volume, descriptor in backend.volume_files(ds):
            if (ds.url, group_uuid, volume) in indexed:
                continue
            meta = backend.read_metadata(descriptor) or {}
            try:
                capacity_mb = backend.disk_info(descriptor)[0] // (1024 * 1024)
            except (OSError, VmdkopsError):
                capacity_mb = None
            attached = (vm_names.get(str(meta.get("attachedVMUuid")).lower(),
                                     meta.get("attachedVMName") or meta.get("attachedVMUuid"))
                        if meta.get("status") == "attached" else None)
            records.append(_record(descriptor, volume, ds.name, vmgroups.get(group_uuid),
                                   meta.get("volOpts") or {}, capacity_mb, attached,
                                   meta.get("created-by"), _iso(meta.get("created"))))
    return records


def _takeovers(query):
    """(vmgroup, vol@ds) -> "from VM A, <when>" of each volume's last takeover."""
    last = {}
    for vmgroup, target, detail, at in query(
            "SELECT vmgroup, target, detail, CAST(at AS TEXT) FROM audit_events "
            "WHERE action = 'takeover' AND outcome = 'ok' ORDER BY id"):
        holder = re.search(r" taken over from VM (.+?), silent ", detail or "")
        last[(vmgroup, target)] = f"from VM {holder.group(1) if holder else '?'}, {at[:10]} {at[11:19]}"
    return last


def list_volumes(query, backend, vmgroup_glob=None, with_used=True, with_takeovers=False):
    """Records of every volume, sorted by (volume, datastore). ``query(sql)``
    returns the rows of a query on the config DB; None without one."""
    datastores = backend.datastores()
    by_url = {ds.url: ds for ds in datastores}
    vm_names = {vm.uuid.lower(): vm.name for vm in backend.vms()}
    indexed = set()
    records = []
    if query is not None:
        known = {uuid: name for uuid, name in query("SELECT uuid, name FROM vmgroups")}
        # VMs of other hosts that share the DB: the names their vmgroups know.
        for vm_uuid, name in query("SELECT uuid, name FROM vms WHERE name IS NOT NULL"):
            vm_names.setdefault(vm_uuid.lower(), name)
        # Options and dates are parsed here from their stored text: the
        # options of many volumes are alike, so each distinct text is parsed once.
        rows = query(
            "SELECT v.name, v.datastore_url, CAST(v.options AS TEXT), v.size_mb, "
            "v.attached_vm_uuid, v.created_by, CAST(v.created AS TEXT), g.uuid, g.name "
            "FROM volumes v JOIN vmgroups g ON v.vmgroup_id = g.id WHERE v.state IN ('ready', 'resizing')")
        parsed_options, folders = {}, {}
        for name, url, options, size, attached, created_by, created, group_uuid, group_name in rows:
            indexed.add((url, group_uuid, name))
            ds = by_url.get(url)
            if ds is None:
                continue
            folder = folders.get((url, group_uuid))
            if folder is None:
                folder = folders[(url, group_uuid)] = backend.descriptor(ds, group_uuid, "")[:-len(".vmdk")]
            opts = parsed_options.get(options)
            if opts is None:
                opts = parsed_options[options] = json.loads(options) if options else {}
            records.append(_record(
                folder + name + ".vmdk", name, ds.name, group_name, opts, size,
                vm_names.get(attached, attached) if attached else None, created_by,
                f"{created[:10]}T{created[11:19]}Z" if created else None))
    else:
        known = {DEFAULT_VMGROUP_UUID: DEFAULT_VMGROUP}
    records += _unindexed(backend, datastores, indexed, vm_names, known)
    if vmgroup_glob not in (None, "*"):
        records = [r for r in records if r["vmgroup"] and fnmatch.fnmatchcase(r["vmgroup"], vmgroup_glob)]
    records.sort(key=lambda r: (r["volume"], r["datastore"]))
    if with_takeovers and query is not None:
        taken = _takeovers(query)
        for record in records:
            record["taken_over"] = taken.get((record["vmgroup"], f"{record['volume']}@{record['datastore']}"),
                                             "never")
    if with_used:
        for record, allocated in zip(records, backend.allocated_bytes_many(
                [record["_descriptor"] for record in records])):
            record["used_mb"] = None if allocated is None else allocated // (1024 * 1024)
    return records


@functools.lru_cache(maxsize=4096)
def size_text(mb):
    return "N/A" if mb is None else human_size(mb * 1024 * 1024)


def created_text(iso):
    """``2017-08-21T04:36:08Z`` as the original showed it: ``Mon Aug 21 04:36:08 2017``."""
    if not iso:
        return "N/A"
    return datetime(int(iso[0:4]), int(iso[5:7]), int(iso[8:10]), int(iso[11:13]),
                    int(iso[14:16]), int(iso[17:19])).ctime()


def _find(session, backend, full_name, vmgroup):
    """(datastore, descriptor, index row) of ``volume@datastore`` in a vmgroup."""
    from sqlalchemy import select

    from ..db.models import VmGroup, Volume
    from ..names import match_datastore, parse

    parsed = parse(full_name)
    if parsed.datastore is None:
        raise InvalidArgument(f"{full_name} has no datastore; name it as volume@datastore")
    known = match_datastore(parsed.datastore, [ds.name for ds in backend.datastores()])
    if known is None:
        raise NotFound(f"Datastore {parsed.datastore} does not exist")
    datastore = backend.datastore_by_name(known)
    if session is None:
        if vmgroup != DEFAULT_VMGROUP:
            raise NotFound(f"Vmgroup {vmgroup} does not exist")
        group_uuid, row = DEFAULT_VMGROUP_UUID, None
    else:
        group = VmGroup.named(session, vmgroup)
        if group is None:
            raise NotFound(f"Vmgroup {vmgroup} does not exist")
        group_uuid = group.uuid
        row = session.scalars(select(Volume).where(
            Volume.vmgroup_id == group.id, Volume.datastore_url == datastore.url,
            Volume.name == parsed.volume)).first()
    descriptor = backend.descriptor(datastore, group_uuid, parsed.volume)
    if not backend.disk_exists(descriptor):
        raise NotFound(f"Volume {parsed.volume} not found in vmgroup {vmgroup} on datastore {known}."
                       + _held_elsewhere(session, datastore, parsed.volume))
    return datastore, descriptor, row


def _held_elsewhere(session, datastore, volume):
    """The vmgroups that have a volume of that name on the datastore, as a hint."""
    if session is None:
        return ""
    from sqlalchemy import select

    from ..db.models import VmGroup, Volume

    groups = sorted(session.scalars(select(VmGroup.name).join(Volume, Volume.vmgroup_id == VmGroup.id).where(
        Volume.datastore_url == datastore.url, Volume.name == volume)))
    return f" It is in vmgroup {', '.join(groups)}: name it with --vmgroup." if groups else ""


def set_options(session, backend, full_name, vmgroup, options):
    """``volume set``: change access and attach-as; they apply at the next attach."""
    prefix = f"Failed to update {options} for {full_name}"
    try:
        pairs = {}
        for item in "".join(options.split()).split(","):
            key, sep, value = item.partition("=")
            if not sep or "=" in value or not key:
                raise InvalidArgument(f"Invalid option '{item}': use key=value[,key=value]")
            pairs[key] = value
        bad = [key for key in pairs if key not in EDITABLE]
        if bad:
            raise InvalidArgument(f"Invalid options: {bad} \nOptions that can be edited: {list(EDITABLE)}")
        for key, value in pairs.items():
            if value not in EDITABLE[key]:
                raise InvalidArgument(f"Invalid option value {value}. Supported values are "
                                      f"{list(EDITABLE[key])}")
        datastore, descriptor, row = _find(session, backend, full_name, vmgroup)
    except VmdkopsError as exc:
        raise VmdkopsError(f"{prefix} - {str(exc).removesuffix('.')}.") from None
    meta = backend.read_metadata(descriptor) or {}
    meta.setdefault("volOpts", {}).update(pairs)
    if row is not None:
        row.options = {**(row.options or {}), **pairs}
        session.flush()
    backend.write_metadata(descriptor, meta)
    return f"Successfully updated settings for {full_name}"


def remove_vmgroup_volumes(session, backend, group):
    """Delete every volume of a vmgroup (none may be attached); the index
    rows go with them."""
    from sqlalchemy import select

    from ..db.models import Volume
    name_of = datastore_names(backend)
    rows = list(session.scalars(select(Volume).where(Volume.vmgroup_id == group.id)))
    in_use = []
    for row in rows:
        ds = backend.datastore_by_url(row.datastore_url)
        holder = ds and backend.attached_to(backend.descriptor(ds, group.uuid, row.name))
        if row.attached_vm_uuid or holder:
            vm = backend.find_vm(row.attached_vm_uuid or holder[0])
            in_use.append(f"Failed to remove volume {row.name}@{name_of(row.datastore_url)}, "
                          f"in use by VM = {vm.name if vm else row.attached_vm_uuid}.")
    if in_use:
        raise VmdkopsError(" ".join(in_use))
    for row in rows:
        ds = backend.datastore_by_url(row.datastore_url)
        if ds is not None:
            backend.delete_disk(backend.descriptor(ds, group.uuid, row.name))
        session.delete(row)
    session.flush()
    return len(rows)


def force_detach(session, backend, full_name, vmgroup):
    """Detach a volume from whatever VM holds it, without asking that VM."""
    from ..backends import VirtualMachine
    from ..executor.detach import detach_disk

    datastore, descriptor, _ = _find(session, backend, full_name, vmgroup)
    holder = backend.attached_to(descriptor)
    meta = backend.read_metadata(descriptor) or {}
    vm_uuid = holder[0] if holder else meta.get("attachedVMUuid")
    if vm_uuid is None:
        return f"Volume {full_name} is not attached"
    vm = backend.find_vm(vm_uuid) or VirtualMachine(meta.get("attachedVMName") or vm_uuid, vm_uuid, "")
    detach_disk(backend, session, vm, descriptor, datastore.url, backend.volume_of(descriptor)[2])
    return f"Volume {full_name} detached from VM {vm.name}"


def power(session, backend, name, on):
    """``host vm power``: a VM of the local backend powered off gives its
    volumes back, as vmdk-opsd's watch does on vSphere; the text to print."""
    from ..executor.detach import detach_disk

    vm = backend.find_vm(name)
    if vm is None:
        raise NotFound(VM_NOT_FOUND.format(name))
    backend.set_power(vm.name, on)
    if on:
        return f"VM {vm.name} is powered on"
    released = []
    for vm_uuid, descriptor, _ in backend.attachments():
        if vm_uuid == vm.uuid:
            datastore, _, volume = backend.volume_of(descriptor)
            detach_disk(backend, session, vm, descriptor, datastore.url, volume)
            released.append(f"{volume}@{datastore.name}")
    return f"VM {vm.name} is powered off" + (f"; detached {', '.join(sorted(released))}" if released else "")


def resize(session, backend, full_name, vmgroup, size_mb):
    """``volume resize``: grow a detached volume, checked against its
    vmgroup's limits as a create is. Its index row is "resizing" (the new
    size counted) while the disk grows; a crash is settled by reconcile at the
    size the disk has."""
    from ..db import write_lock
    from ..db.models import VmGroup
    from ..db.steps import step
    from ..executor import authorize
    from ..executor.options import MAX_DISK_MB
    from ..faults import crashpoint

    datastore, descriptor, row = _find(session, backend, full_name, vmgroup)
    old_mb = backend.disk_info(descriptor)[0] // (1024 * 1024)
    if size_mb <= old_mb:
        raise InvalidArgument(f"Volume {full_name} has {old_mb} MB; it can only grow (asked for {size_mb} MB)")
    if size_mb > MAX_DISK_MB:
        raise InvalidArgument(f"Invalid volume size specified: {size_mb} MB is more than the largest disk, 62tb")
    holder = backend.attached_to(descriptor)
    if holder is not None:
        vm = backend.find_vm(holder[0])
        raise VmdkopsError(f"Volume {full_name} is attached to VM {vm.name if vm else holder[0]}: stop the "
                           "containers that use it (it is detached when the last one stops), then resize it")
    if row is not None:
        with step(session, "resize:reserved"):
            write_lock(session, f"{row.vmgroup_id}|{datastore.url}")
            session.refresh(row)
            tenant = authorize.tenant_of_group(session, session.get(VmGroup, row.vmgroup_id))
            creator = backend.find_vm(row.created_by) if row.created_by else None
            home = backend.datastore_by_name(creator.datastore) if creator else None
            rule = authorize.rule_for(tenant, datastore.url, home.url if home else None, False)
            authorize.check_growth(rule, row.size_mb, size_mb, authorize.used_mb(session, tenant, datastore.url))
            row.size_mb, row.state = size_mb, "resizing"
    meta = backend.read_metadata(descriptor) or {}
    try:
        backend.grow_disk(descriptor, size_mb, (meta.get("volOpts") or {}).get("diskformat", "thin"))
    except BaseException:
        if row is not None:
            with step(session):
                row.size_mb, row.state = old_mb, "ready"
        raise
    backend.write_metadata(descriptor, dict(meta, capacityMB=size_mb))
    crashpoint("resize:metadata")
    if row is not None:
        with step(session, "resize:done"):
            row.state = "ready"
    return f"Volume {full_name} resized from {old_mb} MB to {size_mb} MB"
