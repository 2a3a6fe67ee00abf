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
     "Failed to update access=read-only for nosuch@DS1 - Volume nosuch not found.."),
    ("--volume=testvol0 --vmgroup=_DEFAULT --options=access=read-only",
     "Failed to update access=read-only for testvol0 - testvol0 has no datastore; name it as "
     "volume@datastore."),
    ("--volume=testvol0@DS1 --vmgroup=nosuch --options=access=read-only",
     "Failed to update access=read-only for testvol0@DS1 - Vmgroup nosuch does not exist.")])
def test_s87_set_errors(executor, admin, argv, message):
    executor.ok("VM1", "create", "testvol0")
    assert admin.err(f"volume set {argv}") == message


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
    assert executor.err("VM1", "attach", "held") == \
        "Failed to attach volume held@DS1: it is attached to VM VM3"  # its last known name
    result = admin("volume detach --volume=held@DS1")
    assert result.exit_code == 2 and "--force" in result.stderr
    assert admin.ok("volume detach --volume=held@DS1 --force") == \
        "Volume held@DS1 detached from VM VM3\n"
    assert parse_table(admin.ok("volume ls -c volume,attached-to")) == [
        {"Volume": "held", "Attached-to": "detached"}]
    assert executor.ok("VM1", "attach", "held")["Unit"] == "0"
    executor.ok("VM1", "detach", "held")
