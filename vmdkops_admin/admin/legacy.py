"""Bringing an original VDVS installation over: its auth-db (SQLite, schema
1.0, 1.1 or 1.2, spec esx-service §11) imported into the config DB, and its
volumes' metadata (the space-padded side-cars of spec §9) adopted.

The legacy file is opened read-only. Each row is imported or reported with
the reason it was not; the original never enforced foreign keys, so orphans
are expected. The import is one transaction: a failure changes nothing."""

import json
import os
import re
import sqlite3
import stat
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

from ..backends import ALL_DS, SPECIAL_DATASTORE_URLS, VM_DS
from ..errors import InvalidArgument, VmdkopsError
from ..names import DEFAULT_VMGROUP, DEFAULT_VMGROUP_UUID, validate_volume
from ..progress import Progress

VM_DS_URL, ALL_DS_URL = SPECIAL_DATASTORE_URLS[VM_DS], SPECIAL_DATASTORE_URLS[ALL_DS]
LEGACY_DEFAULT_URL = "_DEFAULT_URL"
TABLES = ("tenants", "vms", "privileges", "volumes")


@dataclass
class Report:
    version: str = ""
    read: dict = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    imported: dict = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    skipped: list = field(default_factory=list)   # (table, row, reason)
    notes: list = field(default_factory=list)     # changes made to rows that were imported

    def skip(self, table, row, reason):
        self.skipped.append((table, row, reason))

    def counts(self):
        return [{"table": t, "read": self.read[t], "imported": self.imported[t],
                 "skipped": sum(1 for s in self.skipped if s[0] == t)} for t in TABLES]


def read_legacy(path):
    """(version, {table: [row dicts]}) of a legacy auth-db, opened read-only."""
    if not os.path.isfile(path):
        raise InvalidArgument(f"No VDVS auth-db at {path}")
    try:
        connection = sqlite3.connect(f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise VmdkopsError(f"Cannot open {path}: {exc}") from None
    connection.row_factory = sqlite3.Row
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"tenants", "vms", "privileges"} <= tables:
            raise VmdkopsError(f"{path} is not a VDVS auth-db (tables: {', '.join(sorted(tables)) or 'none'})")
        version = "1.0"
        if "versions" in tables:
            row = connection.execute("SELECT major_ver, minor_ver FROM versions WHERE id = 0").fetchone()
            if row is not None:
                version = f"{row[0]}.{row[1]}"
        if version not in ("1.0", "1.1", "1.2"):
            raise VmdkopsError(f"{path} has auth-db schema version {version}; versions 1.0, 1.1 and "
                               "1.2 can be imported")
        rows = {table: [dict(r) for r in connection.execute(f"SELECT * FROM {table}")]
                if table in tables else [] for table in TABLES}
    except sqlite3.Error as exc:
        raise VmdkopsError(f"Cannot read {path}: {exc}") from None
    finally:
        connection.close()
    return version, rows


def _url_matcher(backend):
    """Legacy datastore URL -> this inventory's URL (None when it is gone)."""
    def key(url):
        url = url or ""
        return url[len("ds://"):].rstrip("/") if url.startswith("ds://") else url.rstrip("/")

    known = {key(ds.url): ds.url for ds in backend.datastores()}

    def match(url):
        if url in (VM_DS_URL, ALL_DS_URL):
            return url
        return known.get(key(url))
    return match


def _mb(value):
    return None if not value else int(value)


def row_text(row):
    return ", ".join(f"{k}={v!r}" for k, v in row.items())


def import_auth_db(session, backend, path, merge=False, dry_run=False, progress=None):
    """Import a legacy auth-db into the open config DB session; the report.
    ``progress(done, total)`` hears of each row."""
    version, legacy = read_legacy(path)
    run = _Import(session, backend, legacy, Report(version=version), progress)
    run.clear_target(merge)
    run.tenants()
    run.vms()
    run.privileges()
    run.volumes()
    if not dry_run:
        _move_default_folders(backend, run.remap, run.report)
    return run.report


class _Import:
    """One import, a table at a time; rows that cannot be imported are
    skipped with the reason in the report."""

    def __init__(self, session, backend, legacy, report, progress):
        self.session, self.backend, self.legacy, self.report = session, backend, legacy, report
        for table in TABLES:
            report.read[table] = len(legacy[table])
        self.steps = Progress(sum(len(legacy[table]) for table in ("tenants", "vms", "privileges", "volumes")),
                              progress)
        self.match = _url_matcher(backend)
        self.groups = {}  # legacy tenant id -> VmGroup
        self.remap = {}  # legacy tenant id -> the uuid it gets
        self.seen = set()  # (vmgroup uuid, datastore url) of the privileges imported

    def clear_target(self, merge):
        """A config DB as ``config init`` made it is replaced; any other is
        merged into with ``merge`` only."""
        from sqlalchemy import func, select

        from ..db.models import VmGroup, Volume

        existing = self.session.scalars(select(VmGroup)).all()
        pristine = (len(existing) == 1 and existing[0].name == DEFAULT_VMGROUP and not existing[0].vms
                    and not self.session.scalar(select(func.count(Volume.id))))
        if existing and not pristine and not merge:
            raise VmdkopsError("The config DB already has vmgroups; use --merge to import into it "
                               "(clashing rows are reported, never overwritten)")
        if pristine and not merge:
            self.session.delete(existing[0])
            self.session.flush()

    def tenants(self):
        from sqlalchemy import select

        from ..db.models import VmGroup
        from ..names import validate_vmgroup_name

        report = self.report
        names = {g.name for g in self.session.scalars(select(VmGroup))}
        uuids = {g.uuid for g in self.session.scalars(select(VmGroup))}
        # 1.0 gave _DEFAULT a random uuid; 1.1 fixed it (the original's offline step).
        for tenant in self.legacy["tenants"]:
            if tenant["name"] == DEFAULT_VMGROUP and tenant["id"] != DEFAULT_VMGROUP_UUID \
                    and _is_uuid(tenant["id"]):
                self.remap[tenant["id"]] = DEFAULT_VMGROUP_UUID
                report.notes.append(f"_DEFAULT's uuid {tenant['id']} becomes {DEFAULT_VMGROUP_UUID}")
        for tenant in self.legacy["tenants"]:
            self.steps.advance()
            group_uuid = self.remap.get(tenant["id"], tenant["id"])
            name = tenant["name"]
            if not _is_uuid(group_uuid):
                report.skip("tenants", tenant, f"its id {group_uuid!r} is not a uuid (it names the "
                                               "vmgroup's folder on every datastore)")
                continue
            try:
                validate_vmgroup_name(name)
            except InvalidArgument as exc:
                report.skip("tenants", tenant, str(exc))
                continue
            if name in names or group_uuid in uuids:
                report.skip("tenants", tenant, f"vmgroup {name} (or its uuid) exists already")
                continue
            url = tenant.get("default_datastore_url") or VM_DS_URL
            matched = self.match(url)
            if matched is None:
                report.notes.append(f"vmgroup {name}: default datastore {url} is not in the "
                                    "inventory; _VM_DS is used instead")
                matched = VM_DS_URL
            group = VmGroup(uuid=group_uuid, name=name, description=tenant.get("description") or "",
                            default_datastore_url=matched)
            self.session.add(group)
            self.groups[tenant["id"]] = group
            names.add(name)
            uuids.add(group_uuid)
            report.imported["tenants"] += 1

    def _group(self, table, row):
        """The imported vmgroup of a row, or None (the row skipped)."""
        group = self.groups.get(row["tenant_id"])
        if group is None:
            self.report.skip(table, row, f"its vmgroup {row['tenant_id']} was not imported or does not exist")
        return group

    def vms(self):
        from sqlalchemy import select

        from ..db.models import Vm

        members = {vm.uuid for vm in self.session.scalars(select(Vm))}
        inventory_names = {vm.uuid.lower(): vm.name for vm in self.backend.vms()}
        for vm in self.legacy["vms"]:
            self.steps.advance()
            group = self._group("vms", vm)
            vm_uuid = str(vm["vm_id"] or "").lower()
            if group is None:
                continue
            if not vm_uuid:
                self.report.skip("vms", vm, "no VM uuid")
            elif vm_uuid in members:
                self.report.skip("vms", vm, "the VM is in a vmgroup already")
            else:
                group.vms.append(Vm(uuid=vm_uuid, name=vm.get("vm_name") or inventory_names.get(vm_uuid)))
                members.add(vm_uuid)
                self.report.imported["vms"] += 1

    def privileges(self):
        from ..db.models import Privilege

        report, seen = self.report, self.seen
        for privilege in self.legacy["privileges"]:
            self.steps.advance()
            group = self._group("privileges", privilege)
            if group is None:
                continue
            url = privilege["datastore_url"]
            if url == LEGACY_DEFAULT_URL:
                # 1.1 -> 1.2: _DEFAULT's legacy privilege becomes full access to _ALL_DS.
                report.notes.append(f"{group.name}: the legacy _DEFAULT_URL privilege becomes _ALL_DS")
                url, privilege = ALL_DS_URL, dict(privilege, allow_create=1, max_volume_size=0, usage_quota=0)
            matched = self.match(url)
            if matched is None:
                report.skip("privileges", privilege, f"datastore {url} is not in the inventory")
                continue
            if (group.uuid, matched) in seen:
                report.skip("privileges", privilege, "a privilege for this datastore was imported already")
                continue
            seen.add((group.uuid, matched))
            group.privileges.append(Privilege(
                datastore_url=matched, allow_create=bool(privilege.get("allow_create")),
                max_volume_size=_mb(privilege.get("max_volume_size")),
                usage_quota=_mb(privilege.get("usage_quota"))))
            report.imported["privileges"] += 1
        for group in self.groups.values():
            # 1.1 -> 1.2: every vmgroup has full access to its default datastore.
            if (group.uuid, group.default_datastore_url) not in seen:
                group.privileges.append(Privilege(datastore_url=group.default_datastore_url,
                                                  allow_create=True))
                seen.add((group.uuid, group.default_datastore_url))
                report.notes.append(f"{group.name}: full access to its default datastore added")
        self.session.flush()

    def volumes(self):
        from ..db.models import Volume

        report, indexed = self.report, set()
        for volume in self.legacy["volumes"]:
            self.steps.advance()
            group = self._group("volumes", volume)
            matched = self.match(volume["datastore_url"])
            key = (volume["tenant_id"], matched, volume["volume_name"])
            if group is None:
                continue
            if matched is None or matched in (VM_DS_URL, ALL_DS_URL):
                report.skip("volumes", volume, f"datastore {volume['datastore_url']} is not in the inventory")
            elif key in indexed:
                report.skip("volumes", volume, "a duplicate of a volume row imported already")
            elif problem := _name_problem(volume["volume_name"]):
                report.skip("volumes", volume, f"not a valid volume name: {problem}")
            else:
                indexed.add(key)
                self.session.add(Volume(vmgroup_id=group.id, datastore_url=matched, name=volume["volume_name"],
                                        size_mb=int(volume.get("volume_size") or 0), options={}, state="ready"))
                report.imported["volumes"] += 1
        self.session.flush()


def _is_uuid(text):
    """Whether ``text`` is a uuid in its canonical form (the only form that
    is ever a folder name)."""
    try:
        return str(uuid.UUID(str(text))) == str(text).lower()
    except ValueError:
        return False


def _name_problem(volume):
    try:
        validate_volume(volume or "")
    except InvalidArgument as exc:
        return str(exc)
    return None


def _move_default_folders(backend, remap, report):
    """Volumes of a 1.0 ``_DEFAULT`` live in ``dockvols/<old uuid>``: they move
    to the fixed uuid's folder, as the original's offline step did."""
    for old, new in remap.items():
        for ds in backend.datastores():
            moved = backend.vmgroup_folder_moved(ds, old, new, DEFAULT_VMGROUP)
            if moved == "exists":
                report.notes.append(f"{ds.name}: dockvols/{old} left in place: dockvols/{new} exists")
            elif moved == "moved":
                report.notes.append(f"{ds.name}: dockvols/{old} moved to dockvols/{new}")


# -- adopting the original's side-cars ------------------------------------------------------

_SIDECARS = re.compile(r'sidecars\s*=\s*"[^,"]*,([^"]+)"')


def _read_regular(path, limit=64 * 1024):
    """The start of a regular file, never through a symlink, a FIFO or a device
    (a datastore's files may have been put there by another host); None otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return os.read(fd, limit) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


def original_sidecar(descriptor):
    """The original's side-car of a descriptor: the file its ``sidecars``
    line names, else a ``<vol>-*.vmfd`` next to it. Only a file of that form
    in the descriptor's own folder is ever named."""
    folder = os.path.dirname(descriptor)
    stem = os.path.basename(descriptor)[:-len(".vmdk")]
    text = _read_regular(descriptor)
    if text is None:
        return None
    match = _SIDECARS.search(text.decode("utf-8", "replace"))
    candidates = sorted(name for name in os.listdir(folder)
                        if name.startswith(stem + "-") and name.endswith(".vmfd"))
    if match:
        named = match.group(1).strip()
        return os.path.join(folder, named) if named in candidates else None
    return os.path.join(folder, candidates[0]) if candidates else None


def read_original_metadata(path):
    """The original's metadata: JSON padded with spaces (invalid JSON: None)."""
    text = _read_regular(path, 1024 * 1024)
    try:
        meta = json.loads(text.strip() or "null") if text is not None else None
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def adopt(backend, dry_run, found):
    """Give our side-car to every disk that has only the original's; the
    original's is kept. A disk whose files fail their checks is left for
    reconcile to report. ``found(volume, problem, action)`` as in reconcile."""
    for ds in backend.datastores():
        for disk in backend.disks(ds):
            volume, descriptor = disk.volume, disk.descriptor
            if disk.problem or backend.read_metadata(descriptor) is not None:
                continue
            original = original_sidecar(descriptor)
            meta = read_original_metadata(original) if original else None
            if meta is None:
                continue
            if found(f"{volume}@{ds.name}", "metadata only in the original VDVS format", "adopted"):
                backend.write_metadata(descriptor, meta)
