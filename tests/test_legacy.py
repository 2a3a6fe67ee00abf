"""Coming from VDVS: ``config import --from-vdvs`` of auth-dbs of schema 1.0,
1.1 and 1.2 (built here from the schema of spec esx-service §11, with the
orphans real ones have), on SQLite and PostgreSQL, and ``volume reconcile
--adopt`` of volumes laid out as the original did."""

import hashlib
import json
import os
import sqlite3

import pytest

from conftest import parse_table

from rig import VM1_UUID, VM2_UUID, VM3_UUID

pytestmark = pytest.mark.usefixtures("configured")

DEFAULT = "11111111-1111-1111-1111-111111111111"
OLD_DEFAULT = "9b3c6b8e-0000-4000-8000-00000000d3fa"
DEV, TEST, GONE, BAD = ("aaaaaaaa-0000-4000-8000-000000000001", "bbbbbbbb-0000-4000-8000-000000000002",
                        "cccccccc-0000-4000-8000-000000000003", "dddddddd-0000-4000-8000-000000000004")
DELETED = "eeeeeeee-0000-4000-8000-000000000005"
ORPHAN_VM = "564d0000-0000-0000-0000-00000000beef"
NOSUCH_URL = "/vmfs/volumes/5a1b0000-deadbeef"


def build_legacy(path, version, ds1, ds2):
    """A legacy auth-db with the messy cases: orphans, unknown datastores,
    an invalid name, duplicate volume rows (1.0 had no primary key there)."""
    default = OLD_DEFAULT if version == "1.0" else DEFAULT
    db = sqlite3.connect(path)
    vm_name = ", vm_name TEXT" if version == "1.2" else ""
    volumes_pk = "" if version == "1.0" else ", PRIMARY KEY (tenant_id, datastore_url, volume_name)"
    db.executescript(f"""
        CREATE TABLE tenants (id TEXT PRIMARY KEY NOT NULL, name TEXT UNIQUE NOT NULL,
                              description TEXT, default_datastore_url TEXT);
        CREATE TABLE vms (vm_id TEXT PRIMARY KEY NOT NULL, tenant_id TEXT NOT NULL{vm_name});
        CREATE TABLE privileges (tenant_id TEXT NOT NULL, datastore_url TEXT NOT NULL,
                                 allow_create INTEGER, max_volume_size INTEGER, usage_quota INTEGER,
                                 PRIMARY KEY (tenant_id, datastore_url));
        CREATE TABLE volumes (tenant_id TEXT NOT NULL, datastore_url TEXT NOT NULL,
                              volume_name TEXT, volume_size INTEGER{volumes_pk});
    """)
    if version != "1.0":
        db.execute("CREATE TABLE versions (id INTEGER PRIMARY KEY NOT NULL, major_ver INTEGER NOT NULL, "
                   "minor_ver INTEGER NOT NULL, vmodl_major_ver INTEGER NOT NULL, "
                   "vmodl_minor_ver INTEGER NOT NULL)")
        db.execute("INSERT INTO versions VALUES (0, 1, ?, 1, 0)", (int(version[-1]),))
    empty_default = "" if version != "1.2" else "_VM_DS://"
    db.executemany("INSERT INTO tenants VALUES (?, ?, ?, ?)", [
        (default, "_DEFAULT", "This is a default vmgroup", empty_default),
        (DEV, "dev", "Developers", ds1), (TEST, "test", None, empty_default),
        (GONE, "gone-ds", "", NOSUCH_URL), (BAD, "bad name", "renamed by the old bug", ds2)])
    vms = [(VM1_UUID.upper(), DEV, "VM1"), (VM2_UUID, TEST, None), (ORPHAN_VM, DELETED, "ghost"),
           (VM3_UUID, BAD, "VM3")]
    if version == "1.2":
        db.executemany("INSERT INTO vms VALUES (?, ?, ?)", vms)
    else:
        db.executemany("INSERT INTO vms VALUES (?, ?)", [v[:2] for v in vms])
    default_privileges = ([(default, "_ALL_DS://", 1, 0, 0), (default, "_VM_DS://", 1, 0, 0)]
                          if version == "1.2" else [(default, "_DEFAULT_URL", 1, 0, 0)])
    db.executemany("INSERT INTO privileges VALUES (?, ?, ?, ?, ?)", default_privileges + [
        (DEV, ds1, 1, 500, 1000), (DEV, ds2, 0, 0, 0), (TEST, "_ALL_DS://", 1, 0, 300),
        (TEST, NOSUCH_URL, 1, 0, 0), (DELETED, ds1, 1, 0, 0), (BAD, ds2, 1, 0, 0)])
    volumes = [(DEV, ds1, "v1", 100), (DEV, ds1, "v2", 200), (DELETED, ds1, "v3", 50),
               (DEV, NOSUCH_URL, "v4", 10), (TEST, ds2, "t1", 100), (default, ds1, "d1", 100)]
    if version == "1.0":
        volumes.append((DEV, ds1, "v1", 100))
    db.executemany("INSERT INTO volumes VALUES (?, ?, ?, ?)", volumes)
    db.commit()
    db.close()


def vmfs_url(inventory, name):
    """How the original stored a datastore's URL (ds:// form, as vSphere gives it)."""
    return inventory.datastore_by_name(name).url


@pytest.fixture(params=["1.0", "1.1", "1.2"])
def legacy(request, tmp_path, inventory):
    path = tmp_path / f"auth-db-{request.param}"
    url1 = vmfs_url(inventory, "DS1")
    url2 = vmfs_url(inventory, "DS2").removeprefix("ds://")  # a plain path matches as well
    build_legacy(str(path), request.param, url1, url2)
    return request.param, str(path)


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def snapshot(admin):
    return [admin.ok("vmgroup ls"), admin.ok("volume ls -c volume,datastore,vmgroup,capacity")] + [
        admin.ok(f"vmgroup access ls --name={row['Name']}") for row in parse_table(admin.ok("vmgroup ls"))]


def test_dry_run_changes_nothing(admin, legacy):
    version, path = legacy
    before, legacy_digest = snapshot(admin), digest(path)
    out = admin.ok("config", "import", "--from-vdvs", path, "--dry-run")
    assert out.startswith(f"Dry run, nothing was changed: VDVS auth-db {path} (schema {version})")
    assert snapshot(admin) == before and digest(path) == legacy_digest


def test_every_row_is_accounted_for(admin, legacy):
    version, path = legacy
    legacy_digest = digest(path)
    report = json.loads(admin.ok("config", "import", "--from-vdvs", path, "--output-format=json"))
    assert report["version"] == version and digest(path) == legacy_digest
    counts = {c["table"]: c for c in report["tables"]}
    for table, count in counts.items():
        assert count["imported"] + count["skipped"] == count["read"], table
    reasons = {(s["table"], s["reason"]) for s in report["skipped"]}
    assert ("tenants", "Vmgroup name bad name is invalid, only [a-zA-Z0-9_][a-zA-Z0-9_.-]* is allowed") in reasons
    assert ("vms", f"its vmgroup {DELETED} was not imported or does not exist") in reasons
    assert ("privileges", f"datastore {NOSUCH_URL} is not in the inventory") in reasons
    assert ("volumes", f"datastore {NOSUCH_URL} is not in the inventory") in reasons
    assert counts["tenants"]["imported"] == 4 and counts["volumes"]["imported"] == 4
    if version == "1.0":
        assert ("volumes", "a duplicate of a volume row imported already") in reasons
        assert f"_DEFAULT's uuid {OLD_DEFAULT} becomes {DEFAULT}" in report["notes"]
    if version == "1.1":
        assert "_DEFAULT: the legacy _DEFAULT_URL privilege becomes _ALL_DS" in report["notes"]

    groups = {r["Name"]: r for r in parse_table(admin.ok("vmgroup ls"))}
    assert set(groups) == {"_DEFAULT", "dev", "test", "gone-ds"}
    assert (groups["dev"]["Uuid"], groups["dev"]["Default_datastore"], groups["dev"]["VM_list"]) == (
        DEV, "DS1", "VM1")
    assert groups["_DEFAULT"]["Uuid"] == DEFAULT
    assert groups["test"]["VM_list"] == "VM2"  # the name comes from the inventory
    assert groups["gone-ds"]["Default_datastore"] == "_VM_DS"
    access = {tuple(r.values()) for r in parse_table(admin.ok("vmgroup access ls --name=dev"))}
    assert access == {("DS1", "True", "500.00MB", "1000.00MB"), ("DS2", "False", "Unset", "Unset")}
    test_access = {tuple(r.values()) for r in parse_table(admin.ok("vmgroup access ls --name=test"))}
    assert ("_ALL_DS", "True", "Unset", "300.00MB") in test_access
    assert ("_VM_DS", "True", "Unset", "Unset") in test_access  # full access to the default datastore


# -- the original's authorization rules, on the legacy data ------------------------------

def legacy_decision(path, vm_uuid, vm_ds_url, target_url, cmd, size_mb):
    """What the original would answer (spec esx-service §10), after its own
    automatic 1.1 -> 1.2 upgrade (and the 1.0 -> 1.1 step)."""
    db = sqlite3.connect(path)
    tenants = {r[0]: r for r in db.execute("SELECT id, name, default_datastore_url FROM tenants")}
    if any(r[1] == "_DEFAULT" and r[0] != DEFAULT for r in tenants.values()):  # 1.0 -> 1.1
        old = next(r[0] for r in tenants.values() if r[1] == "_DEFAULT")
    else:
        old = DEFAULT
    remap = lambda tid: DEFAULT if tid == old else tid  # noqa: E731
    tenants = {remap(k): (remap(k), v[1], v[2] or "_VM_DS://") for k, v in tenants.items()}
    vms = {r[0].lower(): remap(r[1]) for r in db.execute("SELECT vm_id, tenant_id FROM vms")}
    privileges = {}
    for tid, url, allow, max_size, quota in db.execute("SELECT * FROM privileges"):
        if url == "_DEFAULT_URL":
            url, allow, max_size, quota = "_ALL_DS://", 1, 0, 0
        privileges[(remap(tid), url)] = (allow, max_size, quota)
    for tid, _, default_url in tenants.values():
        privileges.setdefault((tid, default_url), (1, 0, 0))
    volumes = {}
    for tid, url, name, size in db.execute("SELECT * FROM volumes"):
        volumes[(remap(tid), url, name)] = size  # the original's primary key keeps one row
    db.close()
    tenant = tenants.get(vms.get(vm_uuid)) or next((t for t in tenants.values() if t[1] == "_DEFAULT"), None)
    if tenant is None:
        return "no vmgroup"
    short = target_url is None
    real_url = vm_ds_url if (short and tenant[2] == "_VM_DS://") else (target_url or tenant[2])
    if short:
        row = privileges.get((tenant[0], tenant[2]))
    else:
        row = privileges.get((tenant[0], target_url))
        if row is None and target_url == vm_ds_url:
            row = privileges.get((tenant[0], "_VM_DS://"))
        if row is None:
            row = privileges.get((tenant[0], "_ALL_DS://"))
    if row is None:
        return "No access privilege exists"
    allow, max_size, quota = row
    if cmd == "create":
        used = sum(s for (tid, url, _), s in volumes.items() if tid == tenant[0] and url == real_url)
        if not allow:
            return "No create privilege"
        if max_size and size_mb > max_size:
            return "Volume size exceeds the max volume size limit"
        if quota and used + size_mb > quota:
            return "The total volume size exceeds the usage quota"
    if cmd == "remove" and not allow:
        return "No delete privilege"
    return "allowed"


def our_decision(inventory, vm_uuid, target_url, cmd, size_mb):
    from sqlalchemy.orm import Session

    from vmdkops_admin.db import modes
    from vmdkops_admin.executor import authorize

    vm = inventory.find_vm(vm_uuid)
    vm_ds = inventory.datastore_by_name(vm.datastore)
    engine = modes.connect(modes.detect())
    try:
        with Session(engine) as session:
            try:
                tenant = authorize.tenant_of(session, vm)
            except authorize.NotAuthorized:
                return "no vmgroup"
            short = target_url is None
            rule = authorize.rule_for(tenant, target_url or "", vm_ds.url, short)
            real_url = target_url
            if short:
                real_url = vm_ds.url if tenant.default_datastore_url == "_VM_DS://" else tenant.default_datastore_url
            try:
                if cmd == "create":
                    authorize.check_create(rule, size_mb, authorize.used_mb(session, tenant, real_url))
                else:
                    authorize.check(rule, cmd)
            except authorize.NotAuthorized as exc:
                return str(exc)
            return "allowed"
    finally:
        engine.dispose()


def test_authorization_is_what_the_original_decided(admin, legacy, inventory):
    _, path = legacy
    admin.ok("config", "import", "--from-vdvs", path)
    ds1, ds2 = inventory.datastore_by_name("DS1").url, inventory.datastore_by_name("DS2").url
    legacy_urls = {ds1: ds1, ds2: ds2.removeprefix("ds://")}
    cases = 0
    # VM3 belonged to the invalid-named vmgroup that was reported, not imported.
    for vm in (VM1_UUID, VM2_UUID):
        vm_ds_url = inventory.datastore_by_name(inventory.find_vm(vm).datastore).url
        for target in (None, ds1, ds2):
            for cmd, size in (("create", 100), ("create", 500), ("create", 600), ("create", 800),
                              ("remove", 0), ("attach", 0)):
                expected = legacy_decision(path, vm, legacy_urls[vm_ds_url], legacy_urls.get(target),
                                           cmd, size)
                assert our_decision(inventory, vm, target, cmd, size) == expected, (vm, target, cmd, size)
                cases += 1
    assert cases == 36


def test_import_again(admin, legacy):
    _, path = legacy
    admin.ok("config", "import", "--from-vdvs", path)
    before = snapshot(admin)
    assert admin.err("config", "import", "--from-vdvs", path) == (
        "The config DB already has vmgroups; use --merge to import into it (clashing rows are "
        "reported, never overwritten)")
    report = json.loads(admin.ok("config", "import", "--from-vdvs", path, "--merge", "--output-format=json"))
    assert all(c["imported"] == 0 for c in report["tables"])
    assert snapshot(admin) == before


def test_merge_imports_what_does_not_clash(admin, legacy):
    _, path = legacy
    admin.ok("vmgroup create --name=dev --default-datastore=DS2")
    admin.ok("vmgroup create --name=mine --default-datastore=DS2")
    report = json.loads(admin.ok("config", "import", "--from-vdvs", path, "--merge", "--output-format=json"))
    reasons = [s["reason"] for s in report["skipped"] if s["table"] == "tenants"]
    assert "vmgroup dev (or its uuid) exists already" in reasons
    assert "vmgroup _DEFAULT (or its uuid) exists already" in reasons
    names = {r["Name"] for r in parse_table(admin.ok("vmgroup ls"))}
    assert names == {"_DEFAULT", "dev", "mine", "test", "gone-ds"}
    assert parse_table(admin.ok("vmgroup ls"))[1]["Default_datastore"] == "DS2"  # not overwritten


def test_not_an_auth_db(admin, tmp_path, inventory):
    (tmp_path / "x").write_text("not sqlite")
    assert admin.err("config", "import", "--from-vdvs", str(tmp_path / "x")).startswith("Cannot read")
    assert admin.err("config", "import", "--from-vdvs", str(tmp_path / "nope")) == \
        f"No VDVS auth-db at {tmp_path / 'nope'}"


# -- adopting the original's volumes -------------------------------------------------------

def original_volume(folder, name, size_mb, meta, sidecar_line=True):
    """A volume as the original left it on VMFS: descriptor, extent, padded side-car."""
    os.makedirs(folder, exist_ok=True)
    sidecar = f"{name}-c0ffee01.vmfd"
    with open(os.path.join(folder, f"{name}.vmdk"), "w") as f:
        f.write("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
                'createType="vmfs"\n\n# Extent description\n'
                f'RW {size_mb * 2048} VMFS "{name}-flat.vmdk"\n\n# The Disk Data Base\n#DDB\n'
                + (f'ddb.sidecars = "docker-volume-vsphere,{sidecar}"\n' if sidecar_line else ""))
    with open(os.path.join(folder, f"{name}-flat.vmdk"), "w") as f:
        f.truncate(size_mb << 20)
    text = json.dumps(meta)
    with open(os.path.join(folder, sidecar), "w") as f:
        f.write(text + " " * (4095 - len(text)) + "\n")
    return os.path.join(folder, sidecar)


def test_adopt_volumes_of_the_original(admin, legacy, inventory, executor):
    version, path = legacy
    dockvols = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols")
    meta = {"status": "detached", "volOpts": {"fstype": "xfs", "size": "50mb", "diskformat": "thin"},
            "created": "Wed Mar  1 20:06:02 2017", "created-by": "old-vm"}
    default_folder = OLD_DEFAULT if version == "1.0" else DEFAULT
    kept = original_volume(os.path.join(dockvols, DEV), "v1", 50, meta)
    original_volume(os.path.join(dockvols, default_folder), "d1", 20, meta, sidecar_line=False)
    original_volume(dockvols, "flat", 10, meta)
    admin.ok("config", "import", "--from-vdvs", path)

    findings = {(r["Volume"], r["Action"]) for r in parse_table(admin.ok("volume reconcile --adopt"))}
    assert {("v1@DS1", "adopted"), ("d1@DS1", "adopted"), ("flat@DS1", "adopted"),
            ("flat@DS1", "reported")} <= findings
    assert os.path.isfile(kept)  # the original's side-car stays
    rows = {r["Volume"]: r for r in parse_table(admin.ok("volume ls"))}
    assert (rows["v1"]["VMGroup"], rows["v1"]["Capacity"], rows["v1"]["Filesystem"],
            rows["v1"]["Created By"], rows["v1"]["Created Date"]) == (
        "dev", "50MB", "xfs", "old-vm", "Wed Mar  1 20:06:02 2017")
    assert rows["d1"]["VMGroup"] == "_DEFAULT" and rows["flat"]["VMGroup"] == "N/A"
    assert executor.ok("VM1", "get", "v1@DS1")["fstype"] == "xfs"
    assert admin.ok("volume reconcile --adopt --dry-run").count("adopted") == 0


def test_a_tenant_id_that_is_not_a_uuid_is_never_a_folder(admin, tmp_path, inventory):
    """A legacy auth-db written by someone hostile: tenant ids become folder
    names under dockvols, so only a uuid is imported; the rest is reported."""
    path = str(tmp_path / "hostile-auth-db")
    build_legacy(path, "1.0", vmfs_url(inventory, "DS1"), vmfs_url(inventory, "DS2"))
    hostile = ["../../escape", "aaaaaaaa-0000-4000-8000-000000000001/../x", "not-a-uuid", ""]
    db = sqlite3.connect(path)
    db.execute("UPDATE tenants SET id = ? WHERE name = '_DEFAULT'", (hostile[0],))
    db.executemany("INSERT INTO tenants VALUES (?, ?, '', NULL)",
                   [(tenant, f"hostile{i}") for i, tenant in enumerate(hostile[1:])])
    db.commit()
    db.close()
    escape = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols", "..", "..", "escape")
    os.makedirs(escape)
    report = json.loads(admin.ok("config", "import", "--from-vdvs", path, "--output-format=json"))
    reasons = {s["row"]["id"]: s["reason"] for s in report["skipped"] if s["table"] == "tenants"}
    for tenant in hostile:
        assert reasons[tenant] == (f"its id {tenant!r} is not a uuid (it names the vmgroup's folder "
                                   "on every datastore)")
    assert {r["Name"] for r in parse_table(admin.ok("vmgroup ls"))} == {"dev", "test", "gone-ds"}
    assert os.listdir(escape) == []


def test_adoption_reads_no_side_car_outside_the_volumes_folder(admin, legacy, inventory):
    """An original descriptor whose ``sidecars`` line names a file elsewhere
    (another vmgroup's side-car, an absolute path): nothing is adopted from it."""
    version, path = legacy
    dockvols = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols")
    secret = {"status": "attached", "attachedVMName": "secret-vm", "volOpts": {"fstype": "ext4"}}
    stolen = original_volume(os.path.join(dockvols, TEST), "theirs", 10, secret)
    meta = {"status": "detached", "volOpts": {"fstype": "xfs"}}
    for name, named in (("relative", f"../{TEST}/{os.path.basename(stolen)}"), ("absolute", stolen)):
        original_volume(os.path.join(dockvols, DEV), name, 10, meta, sidecar_line=False)
        with open(os.path.join(dockvols, DEV, f"{name}.vmdk"), "a") as f:
            f.write(f'ddb.sidecars = "docker-volume-vsphere,{named}"\n')
        os.unlink(os.path.join(dockvols, DEV, f"{name}-c0ffee01.vmfd"))
    admin.ok("config", "import", "--from-vdvs", path)
    findings = {(r["Volume"], r["Action"]) for r in parse_table(admin.ok("volume reconcile --adopt"))}
    assert ("theirs@DS1", "adopted") in findings
    assert not any(volume in ("relative@DS1", "absolute@DS1") and action == "adopted"
                   for volume, action in findings), findings
    assert not os.path.exists(os.path.join(dockvols, DEV, "relative.vmfd"))
    assert not os.path.exists(os.path.join(dockvols, DEV, "absolute.vmfd"))
