"""``vmdkops_admin volume`` and ``vmgroup rm --remove-volumes`` on volumes made
by a real executor: spec admin-cli §6.F and the volume parts of §6.C."""

import json
import os
import time

import pytest

from conftest import parse_table

pytestmark = pytest.mark.usefixtures("configured")

HEADERS = ["Volume", "Datastore", "VMGroup", "Capacity", "Used", "Filesystem", "Policy",
           "Disk Format", "Attached-to", "Access", "Attach-as", "Created By", "Created Date"]


def test_s80_s82_listing(executor, admin):
    for i in range(5):
        for ds in ("DS1", "DS2"):
            executor.ok("VM1", "create", f"testvol{i}@{ds}", {"size": "100mb", "fstype": "ext4"})
    out = admin.ok("volume ls")
    lines = out.splitlines()
    assert list(parse_table(out)[0]) == HEADERS
    assert len(lines[1].split()) == 13 and all(set(t) == {"-"} for t in lines[1].split())
    rows = parse_table(out)
    assert [(r["Volume"], r["Datastore"]) for r in rows] == [
        (f"testvol{i}", ds) for i in range(5) for ds in ("DS1", "DS2")]
    row = rows[0]
    assert [row[h] for h in HEADERS[2:12]] == [
        "_DEFAULT", "100MB", "0", "ext4", "N/A", "thin", "detached", "read-write",
        "independent_persistent", "VM1"]
    time.strptime(row["Created Date"])  # like "Mon Aug 21 04:36:08 2017"
    executor.ok("VM2", "attach", "testvol0@DS1")
    assert parse_table(admin.ok("volume ls"))[0]["Attached-to"] == "VM2"
    executor.ok("VM2", "detach", "testvol0@DS1")


def test_s81_s83_columns(executor, admin):
    executor.ok("VM1", "create", "v1")
    assert admin.ok("volume ls -c capacity").splitlines()[0].strip() == "Capacity"
    assert admin.ok("volume ls -c created,volume").splitlines()[0].split() == ["Volume", "Created", "Date"]
    for command in ("volume shortls", "volume ls -c volume,capacity,disk-format,attached-to"):
        out = admin.ok(command)
        assert [line.split() for line in out.splitlines()[2:]] == [["v1", "100MB", "thin", "detached"]]
    result = admin("volume ls -c personality")
    assert result.exit_code == 2 and "invalid choices: personality" in result.stderr


def test_s84_vmgroup_filter_and_orphans(executor, admin, inventory):
    admin.ok("vmgroup create --name=dev --default-datastore=DS1 --vm-list=VM2")
    executor.ok("VM1", "create", "default-vol")
    executor.ok("VM2", "create", "dev-vol")
    dockvols = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols")
    with open(os.path.join(dockvols, "orphan.vmdk"), "w") as f:
        f.write('# Disk DescriptorFile\nRW 2048 FLAT "orphan-flat.vmdk" 0\n')
    open(os.path.join(dockvols, "orphan-flat.vmdk"), "w").close()
    assert [r["Volume"] for r in parse_table(admin.ok("volume ls --vmgroup=_DEFAULT"))] == ["default-vol"]
    assert [r["Volume"] for r in parse_table(admin.ok("volume ls --vmgroup=d*"))] == ["dev-vol"]
    assert parse_table(admin.ok("volume ls --vmgroup=nosuch")) == []
    rows = {r["Volume"]: r for r in parse_table(admin.ok("volume ls"))}
    assert set(rows) == {"default-vol", "dev-vol", "orphan"}
    assert rows["orphan"]["VMGroup"] == "N/A" and rows["orphan"]["Capacity"] == "1MB"


def test_json_listing(executor, admin):
    executor.ok("VM1", "create", "v1", {"size": "20mb", "diskformat": "zeroedthick"})
    [record] = json.loads(admin.ok("volume ls --output-format=json"))
    assert {k: record[k] for k in ("volume", "datastore", "vmgroup", "capacity_mb", "used_mb",
                                   "disk_format", "attached_to", "created_by")} == {
        "volume": "v1", "datastore": "DS1", "vmgroup": "_DEFAULT", "capacity_mb": 20,
        "used_mb": 20, "disk_format": "zeroedthick", "attached_to": None, "created_by": "VM1"}
    assert record["created"].endswith("Z") and record["fstype"] is None
    assert parse_table(admin.ok("volume ls -c volume,attached-to")) == [
        {"Volume": "v1", "Attached-to": "detached"}]
    executor.ok("VM1", "attach", "v1")
    [record] = json.loads(admin.ok("volume ls --output-format=json"))
    assert record["attached_to"] == "VM1"
    assert admin.ok("volume ls -c volume,attached-to --output-format=csv") == "volume,attached_to\nv1,VM1\n"
    executor.ok("VM1", "detach", "v1")
    assert admin.ok("volume ls -c volume,attached-to --output-format=csv") == "volume,attached_to\nv1,\n"


def test_s85_s86_set(executor, admin):
    executor.ok("VM1", "create", "testvol0")
    for value in ("persistent", "independent_persistent"):
        assert admin.ok(f"volume set --volume=testvol0@DS1 --vmgroup=_DEFAULT --options=attach-as={value}") == \
            "Successfully updated settings for testvol0@DS1\n"
        rows = parse_table(admin.ok("volume ls -c volume,attach-as"))
        assert rows == [{"Volume": "testvol0", "Attach-as": value}]
    admin.ok('volume set --volume=testvol0@DS1 --vmgroup=_DEFAULT --options="access=read-only"')
    assert parse_table(admin.ok("volume ls -c access"))[0]["Access"] == "read-only"
    assert executor.ok("VM1", "get", "testvol0")["access"] == "read-only"


@pytest.mark.parametrize("argv, message", [
    ("--volume=testvol0@DS1 --vmgroup=_DEFAULT --options=size=10gb",
     "Failed to update size=10gb for testvol0@DS1 - Invalid options: ['size'] \nOptions that can be "
     "edited: ['access', 'attach-as']."),
    ("--volume=testvol0@DS1 --vmgroup=_DEFAULT --options=access=rw",
     "Failed to update access=rw for testvol0@DS1 - Invalid option value rw. Supported values are "
     "['read-write', 'read-only']."),
    ("--volume=nosuch@DS1 --vmgroup=_DEFAULT --options=access=read-only",
     "Failed to update access=read-only for nosuch@DS1 - Volume nosuch not found in vmgroup _DEFAULT on "
     "datastore DS1."),
    ("--volume=testvol0 --vmgroup=_DEFAULT --options=access=read-only",
     "Failed to update access=read-only for testvol0 - testvol0 has no datastore; name it as "
     "volume@datastore."),
    ("--volume=testvol0@DS1 --vmgroup=nosuch --options=access=read-only",
     "Failed to update access=read-only for testvol0@DS1 - Vmgroup nosuch does not exist.")])
def test_s87_set_errors(executor, admin, argv, message):
    executor.ok("VM1", "create", "testvol0")
    assert admin.err(f"volume set {argv}") == message


def test_a_volume_of_another_vmgroup_is_named_where_it_is(executor, admin):
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    executor.ok("VM1", "create", "v1")
    hint = "Volume v1 not found in vmgroup _DEFAULT on datastore DS1. It is in vmgroup vg1: name it with --vmgroup."
    assert admin.err("volume resize --volume=v1@DS1 --size=200mb") == hint
    assert admin.err("volume set --volume=v1@DS1 --vmgroup=_DEFAULT --options=access=read-only") == (
        f"Failed to update access=read-only for v1@DS1 - {hint}")
    assert admin.err("volume resize --volume=v2@DS1 --size=200mb") == (
        "Volume v2 not found in vmgroup _DEFAULT on datastore DS1.")
    admin.ok("volume resize --volume=v1@DS1 --size=200mb --vmgroup=vg1")


def test_s46_s50_remove_volumes_with_the_vmgroup(executor, admin, inventory):
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    executor.ok("VM1", "create", "v1")
    executor.ok("VM1", "create", "v2@DS1")
    admin.ok("vmgroup vm rm --name=vg1 --vm-list=VM1")
    assert admin.err("vmgroup rm --name=vg1") == (
        "The vmgroup has volumes in it, these must be removed/migrated before deleting the vmgroup.")
    uuid = parse_table(admin.ok("vmgroup ls"))[1]["Uuid"]
    assert admin.ok("vmgroup rm --name=vg1 --remove-volumes") == \
        "All Volumes will be removed. vmgroup rm succeeded\n"
    assert parse_table(admin.ok("volume ls")) == []
    dockvols = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols")
    assert not os.path.exists(os.path.join(dockvols, uuid)) and not os.path.lexists(
        os.path.join(dockvols, "vg1"))


def test_remove_volumes_refuses_attached_ones(executor, admin):
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    executor.ok("VM1", "create", "busy")
    executor.ok("VM1", "create", "idle")
    executor.ok("VM1", "attach", "busy")
    assert admin.err("vmgroup rm --name=vg1 --force --remove-volumes") == \
        "Failed to remove volume busy@DS1, in use by VM = VM1."
    assert sorted(r["Volume"] for r in parse_table(admin.ok("volume ls"))) == ["busy", "idle"]
    executor.ok("VM1", "detach", "busy")


def test_force_detach_from_a_vm_that_is_gone(executor, admin):
    executor.ok("VM3", "create", "held")
    executor.ok("VM3", "attach", "held")
    admin.ok("host vm rm --name=VM3")
    assert executor.err("VM1", "attach", "held").startswith(
        "Failed to attach volume held@DS1: it is attached to VM VM3,")  # its last known name
    result = admin("volume detach --volume=held@DS1")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert admin.ok("volume detach --volume=held@DS1 --force") == \
        "Volume held@DS1 detached from VM VM3\n"
    assert parse_table(admin.ok("volume ls -c volume,attached-to")) == [
        {"Volume": "held", "Attached-to": "detached"}]
    assert executor.ok("VM1", "attach", "held")["Unit"] == "0"
    executor.ok("VM1", "detach", "held")


def index_size(name):
    from sqlalchemy import select

    from vmdkops_admin.db.models import Volume
    from vmdkops_admin.db.modes import run_in_transaction

    return run_in_transaction(lambda session: session.scalars(
        select(Volume.size_mb).where(Volume.name == name)).one())


@pytest.mark.parametrize("diskformat", ["thin", "zeroedthick", "eagerzeroedthick"])
def test_resize_grows_a_detached_volume(executor, admin, inventory, diskformat):
    import subprocess

    executor.ok("VM1", "create", "v", {"size": "200mb", "diskformat": diskformat})
    assert admin.ok("volume resize --volume=v@DS1 --size=500MB") == "Volume v@DS1 resized from 200 MB to 500 MB\n"
    assert parse_table(admin.ok("volume ls -c volume,capacity,disk-format")) == [
        {"Volume": "v", "Capacity": "500MB", "Disk Format": diskformat}]
    assert executor.ok("VM1", "get", "v")["capacity"]["size"] == "500MB"
    descriptor = inventory.descriptor(inventory.datastore_by_name("DS1"), "11111111-1111-1111-1111-111111111111", "v")
    assert inventory.read_metadata(descriptor)["capacityMB"] == 500
    assert index_size("v") == 500
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", descriptor], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["virtual-size"] == 500 << 20
    assert subprocess.run(["qemu-img", "check", descriptor], capture_output=True).returncode == 0
    allocated = inventory.disk_info(descriptor)[1]
    assert (500 << 20 <= allocated < 510 << 20) if diskformat != "thin" else allocated < 1 << 20, allocated
    for size in ("500MB", "400MB"):
        assert admin.err(f"volume resize --volume=v@DS1 --size={size}") == (
            f"Volume v@DS1 has 500 MB; it can only grow (asked for {size[:-2]} MB)")
    assert admin.err("volume resize --volume=v@DS1 --size=1.5GB").startswith("Invalid size '1.5GB'")
    assert admin.ok("volume reconcile --dry-run") == "Index, metadata, disks and attachments agree.\n"
    [usage] = json.loads(admin.ok("report usage --output-format=json"))
    assert (usage["datastore"], usage["provisioned_mb"]) == ("DS1", 500)
    audit = json.loads(admin.ok("report audit --output-format=json"))
    assert [(e["action"], e["target"], e["outcome"]) for e in audit if e["action"] == "volume resize"] == [
        ("volume resize", "v@DS1", "ok"), ("volume resize", "v@DS1", "failed"),
        ("volume resize", "v@DS1", "failed")]


def test_resize_within_the_limits_and_never_while_attached(executor, admin):
    admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=600MB "
             "--volume-maxsize=450MB")
    executor.ok("VM1", "create", "a", {"size": "200mb"})
    executor.ok("VM1", "create", "b", {"size": "200mb"})
    assert admin.err("volume resize --volume=a@DS1 --size=500MB") == \
        "Volume size exceeds the max volume size limit"
    assert admin.err("volume resize --volume=a@DS1 --size=401MB") == \
        "The total volume size exceeds the usage quota"
    assert index_size("a") == 200 and executor.ok("VM1", "get", "a")["capacity"]["size"] == "200MB"
    admin.ok("volume resize --volume=a@DS1 --size=400MB")  # the quota exactly
    assert executor.err("VM1", "create", "c", {"size": "1mb"}) == "The total volume size exceeds the usage quota"
    executor.ok("VM3", "attach", "b")
    assert admin.err("volume resize --volume=b@DS1 --size=201MB") == (
        "Volume b@DS1 is attached to VM VM3: stop the containers that use it (it is detached when "
        "the last one stops), then resize it")
    executor.ok("VM3", "detach", "b")
    assert admin.ok("volume reconcile --dry-run") == "Index, metadata, disks and attachments agree.\n"


def test_concurrent_resizes_and_creates_stay_within_the_quota(executor, admin):
    import concurrent.futures

    admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=1000MB")
    for i in range(4):
        executor.ok("VM1", "create", f"r{i}", {"size": "100mb"})

    def resize(i):
        return admin.proc("volume", "resize", f"--volume=r{i}@DS1", "--size=400MB").returncode

    def create(i):
        return "Error" not in executor.call("VM1", "create", f"c{i}", {"size": "300mb"})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        resized = list(pool.map(resize, range(4)))
        created = list(pool.map(create, range(2)))
    rows = parse_table(admin.ok("volume ls -c volume,capacity"))
    total = sum(int(row["Capacity"][:-2]) for row in rows)
    assert 700 <= total <= 1000, (rows, resized, created)
    assert total == 400 + 300 * resized.count(0) + 300 * created.count(True)
    assert admin.ok("volume reconcile --dry-run") == "Index, metadata, disks and attachments agree.\n"
