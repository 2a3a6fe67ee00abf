"""Reports for cron and monitoring: what each vmgroup uses on each datastore
against its quota, the history of that use, and the audit trail.

``usage`` reads the DB with plain SQL through ``query(sql)`` (a stdlib
sqlite3 connection on SQLite): a report must not import more than it needs,
nor hold locks that would delay the executor."""

import re
from datetime import datetime, timedelta, timezone

from ..backends import ALL_DS, SPECIAL_DATASTORE_URLS, VM_DS
from ..errors import InvalidArgument
from ..names import DEFAULT_VMGROUP

VM_DS_URL, ALL_DS_URL = SPECIAL_DATASTORE_URLS[VM_DS], SPECIAL_DATASTORE_URLS[ALL_DS]
_DURATION = re.compile(r"^([0-9]+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_DAYS = 36500


def parse_duration(text):
    match = _DURATION.match(text.strip().lower())
    if not match:
        raise InvalidArgument(f"Invalid duration '{text}': use a number and s, m, h, d or w "
                              "(for example 30d)")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if seconds > MAX_DURATION_DAYS * 86400:
        raise InvalidArgument(f"Invalid duration '{text}': at most {MAX_DURATION_DAYS}d")
    return timedelta(seconds=seconds)


def now():
    return datetime.now(timezone.utc).replace(tzinfo=None)


def usage(query, backend, vmgroup=None, datastore=None, with_allocated=True):
    """One record per vmgroup and datastore where it has volumes or a privilege."""
    stores = {ds.url: ds for ds in backend.datastores()}
    groups = {gid: (uuid, name) for gid, uuid, name in query("SELECT id, uuid, name FROM vmgroups")}
    rules = {(gid, url): (max_size, quota) for gid, url, max_size, quota in query(
        "SELECT vmgroup_id, datastore_url, max_volume_size, usage_quota FROM privileges")}
    members = {}
    for gid, vm_uuid in query("SELECT vmgroup_id, uuid FROM vms"):
        members.setdefault(gid, set()).add(vm_uuid)
    homes = {}  # vmgroup id -> home datastore urls of the VMs acting in it
    assigned = set().union(*members.values()) if members else set()
    for vm in backend.vms():
        ds = backend.datastore_by_name(vm.datastore)
        acting = [gid for gid, vms in members.items() if vm.uuid.lower() in vms] or \
            [gid for gid, (_, name) in groups.items() if name == DEFAULT_VMGROUP
             and vm.uuid.lower() not in assigned]
        for gid in acting:
            if ds is not None:
                homes.setdefault(gid, set()).add(ds.url)
    pairs = {}
    for gid, url, name, size, attached in query(
            "SELECT vmgroup_id, datastore_url, name, size_mb, attached_vm_uuid FROM volumes "
            "WHERE state IN ('ready', 'resizing')"):
        entry = pairs.setdefault((gid, url), {"volumes": 0, "attached": 0, "provisioned": 0, "disks": []})
        entry["volumes"] += 1
        entry["attached"] += 1 if attached else 0
        entry["provisioned"] += size
        if url in stores:
            entry["disks"].append(backend.descriptor(stores[url], groups[gid][0], name))
    for gid, url in rules:
        if url in stores:
            pairs.setdefault((gid, url), {"volumes": 0, "attached": 0, "provisioned": 0, "disks": []})

    records = []
    for (gid, url), entry in pairs.items():
        group_name = groups[gid][1]
        ds_name = stores[url].name if url in stores else url
        if (vmgroup and group_name != vmgroup) or (datastore and ds_name != datastore):
            continue
        rule = rules.get((gid, url))
        if rule is None and url in homes.get(gid, ()):
            rule = rules.get((gid, VM_DS_URL))
        if rule is None:
            rule = rules.get((gid, ALL_DS_URL))
        max_size, total = rule if rule else (None, None)
        allocated = None
        if with_allocated and url in stores:
            sizes = backend.allocated_bytes_many(entry["disks"])
            allocated = sum(s for s in sizes if s is not None) // (1024 * 1024)
        records.append({
            "vmgroup": group_name, "datastore": ds_name, "volumes": entry["volumes"],
            "attached": entry["attached"], "provisioned_mb": entry["provisioned"],
            "allocated_mb": allocated, "max_volume_size": max_size, "total_size": total,
            "used_pct": round(100.0 * entry["provisioned"] / total, 1) if total else None})
    records.sort(key=lambda r: (r["vmgroup"], r["datastore"]))
    return records


def over(records, threshold):
    return [r for r in records if r["used_pct"] is not None and r["used_pct"] >= threshold]


# -- Prometheus text exposition ---------------------------------------------------------

METRICS = (
    ("vmdkops_volumes", "volumes", "Volumes a vmgroup has on a datastore."),
    ("vmdkops_attached_volumes", "attached", "Volumes of a vmgroup on a datastore attached to a VM."),
    ("vmdkops_provisioned_megabytes", "provisioned_mb", "Capacity of a vmgroup's volumes on a datastore, MB."),
    ("vmdkops_allocated_megabytes", "allocated_mb", "Space a vmgroup's volumes take on a datastore, MB."),
    ("vmdkops_max_volume_size_megabytes", "max_volume_size", "Largest volume a vmgroup may create there, MB."),
    ("vmdkops_quota_megabytes", "total_size", "Total size a vmgroup's volumes may have there, MB."),
    ("vmdkops_quota_used_ratio", "used_ratio", "Provisioned capacity over the quota (1 = full)."),
)


def _label(value):
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(records):
    lines = []
    for metric, key, text in METRICS:
        lines += [f"# HELP {metric} {text}", f"# TYPE {metric} gauge"]
        for r in records:
            value = (r["used_pct"] / 100.0 if r["used_pct"] is not None else None) \
                if key == "used_ratio" else r[key]
            if value is not None:
                lines.append(f'{metric}{{vmgroup="{_label(r["vmgroup"])}",'
                             f'datastore="{_label(r["datastore"])}"}} {value}')
    return "\n".join(lines) + "\n"


# -- history ---------------------------------------------------------------------------

def record(session, records, keep=None):
    """Store a snapshot of ``records``; drop snapshots older than ``keep``."""
    from sqlalchemy import delete

    from ..db.models import UsageSnapshot

    taken = now()
    session.add_all(UsageSnapshot(
        taken=taken, vmgroup=r["vmgroup"], datastore=r["datastore"], volumes=r["volumes"],
        attached=r["attached"], provisioned_mb=r["provisioned_mb"], allocated_mb=r["allocated_mb"],
        total_size=r["total_size"]) for r in records)
    if keep is not None:
        session.execute(delete(UsageSnapshot).where(UsageSnapshot.taken < taken - keep))
    session.flush()


def history(session, since=None, vmgroup=None):
    """Growth per vmgroup and datastore between the first and the last snapshot."""
    from sqlalchemy import select

    from ..db.models import UsageSnapshot

    query = select(UsageSnapshot).order_by(UsageSnapshot.taken, UsageSnapshot.id)
    if since is not None:
        query = query.where(UsageSnapshot.taken >= now() - since)
    if vmgroup:
        query = query.where(UsageSnapshot.vmgroup == vmgroup)
    series = {}
    for snapshot in session.scalars(query):
        series.setdefault((snapshot.vmgroup, snapshot.datastore), []).append(snapshot)
    records = []
    for (group, ds), snapshots in sorted(series.items()):
        first, last = snapshots[0], snapshots[-1]
        change = last.provisioned_mb - first.provisioned_mb
        days = (last.taken - first.taken).total_seconds() / 86400
        records.append({
            "vmgroup": group, "datastore": ds, "snapshots": len(snapshots),
            "first": first.taken.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "last": last.taken.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "first_provisioned_mb": first.provisioned_mb, "last_provisioned_mb": last.provisioned_mb,
            "change_mb": change, "change_per_day_mb": round(change / days, 1) if days > 0 else None})
    return records


def audit_events(session, since=None, vmgroup=None, vm=None, failed=False):
    from sqlalchemy import select

    from ..db.models import AuditEvent

    query = select(AuditEvent).order_by(AuditEvent.at, AuditEvent.id)
    if since is not None:
        query = query.where(AuditEvent.at >= now() - since)
    if vmgroup:
        query = query.where(AuditEvent.vmgroup == vmgroup)
    if vm:
        query = query.where(AuditEvent.vm == vm)
    if failed:
        query = query.where(AuditEvent.outcome == "failed")
    return [{"at": e.at.strftime("%Y-%m-%dT%H:%M:%SZ"), "source": e.source, "actor": e.actor,
             "action": e.action, "vmgroup": e.vmgroup, "vm": e.vm, "target": e.target,
             "outcome": e.outcome, "detail": e.detail, "error": e.error} for e in session.scalars(query)]
