"""vmgroup lifecycle and membership: spec admin-cli §6.C and §6.D, on SQLite
and PostgreSQL. Where this project fixes a [BUG] of the original the test
says so and expects the fixed behaviour."""

import os

import pytest

from conftest import parse_table

from rig import VM1_UUID, VM2_UUID

DEFAULT_UUID = "11111111-1111-1111-1111-111111111111"
CREATED = "vmgroup '{}' is created. Do not forget to run 'vmgroup vm add' to add vm to vmgroup."

pytestmark = pytest.mark.usefixtures("configured")


def vmgroups(admin):
    return parse_table(admin.ok("vmgroup ls"))


def access(admin, name):
    return [tuple(row.values()) for row in parse_table(admin.ok(f"vmgroup access ls --name={name}"))]


def members(admin, name):
    return [row["Name"] for row in parse_table(admin.ok(f"vmgroup vm ls --name={name}"))]


def index_volume(name, vmgroup, datastore="DS1", attached_to=None):
    """Record a volume in the index as the executor does when it creates (and
    attaches) one."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from vmdkops_admin.backends import get_backend
    from vmdkops_admin.db import modes
    from vmdkops_admin.db.models import Volume, VmGroup

    engine = modes.connect(modes.detect())
    with Session(engine) as session:
        group = session.scalars(select(VmGroup).where(VmGroup.name == vmgroup)).one()
        session.add(Volume(vmgroup_id=group.id, name=name, size_mb=100, state="ready",
                           datastore_url=get_backend().datastore_by_name(datastore).url,
                           attached_vm_uuid=attached_to))
        session.commit()
    engine.dispose()


# -- §6.C vmgroup lifecycle ------------------------------------------------------------

def test_s30_unknown_default_datastore(admin):
    assert admin.err('vmgroup create --name=test_tenant1 --default-datastore=__BAD_DS '
                     '--description="Test tenant1" --vm-list=VM1') == "Datastore __BAD_DS does not exist"
    assert len(vmgroups(admin)) == 1


def test_s31_all_ds_is_not_a_default_datastore(admin):
    assert admin.err("vmgroup create --name=test_tenant1 --default-datastore=_ALL_DS") == (
        "Cannot use _ALL_DS as default datastore. Please use specific datastore name or "
        "_VM_DS special datastore")


def test_s32_to_s38_vmgroup_walkthrough(admin):
    out = admin.ok('vmgroup create --name=test_tenant1 --default-datastore=_VM_DS '
                   '--description="Test tenant1" --vm-list=VM1')
    assert out == CREATED.format("test_tenant1") + "\n"
    rows = vmgroups(admin)
    assert [r["Name"] for r in rows] == ["_DEFAULT", "test_tenant1"]
    assert len(rows[1]["Uuid"]) == 36
    assert (rows[1]["Description"], rows[1]["Default_datastore"], rows[1]["VM_list"]) == (
        "Test tenant1", "_VM_DS", "VM1")
    assert access(admin, "test_tenant1") == [("_VM_DS", "True", "Unset", "Unset")]

    # S-33: a new default datastore gets a full privilege.
    assert admin.ok('vmgroup update --name=test_tenant1 --description="This is test tenant1" '
                    '--default-datastore=DS1') == "vmgroup modify succeeded\n"
    assert sorted(access(admin, "test_tenant1")) == [
        ("DS1", "True", "Unset", "Unset"), ("_VM_DS", "True", "Unset", "Unset")]
    # S-34
    assert admin.err("vmgroup update --name=test_tenant1 --default-datastore=_ALL_DS").startswith(
        "Cannot use _ALL_DS as default datastore")
    # S-35
    assert admin.ok("vmgroup access rm --name=test_tenant1 --datastore=_VM_DS") == \
        "vmgroup access rm succeeded\n"
    assert access(admin, "test_tenant1") == [("DS1", "True", "Unset", "Unset")]
    # S-36
    admin.ok('vmgroup update --name=_DEFAULT --description="This is the default vmgroup"')
    rows = vmgroups(admin)
    assert rows[0]["Description"] == "This is the default vmgroup"
    assert [rows[1][k] for k in ("Name", "Description", "Default_datastore", "VM_list")] == [
        "test_tenant1", "This is test tenant1", "DS1", "VM1"]
    # S-37
    uuid = rows[1]["Uuid"]
    admin.ok("vmgroup update --name=test_tenant1 --new-name=new_test_tenant1")
    renamed = vmgroups(admin)[1]
    assert (renamed["Uuid"], renamed["Name"], renamed["VM_list"]) == (uuid, "new_test_tenant1", "VM1")
    assert admin.err("vmgroup update --name=_DEFAULT --new-name=new_test_tenant1") == (
        "Vmgroup name _DEFAULT is invalid, only rename of vmgroups other than _DEFAULT is allowed")
    # S-38
    assert admin.ok("vmgroup vm rm --name=new_test_tenant1 --vm-list=VM1") == "vmgroup vm rm succeeded\n"
    assert admin.ok("vmgroup rm --name=new_test_tenant1 --remove-volumes") == \
        "All Volumes will be removed. vmgroup rm succeeded\n"
    assert [r["Name"] for r in vmgroups(admin)] == ["_DEFAULT"]


@pytest.mark.parametrize("name", ["-bad", "a b", ".x", "x/y", "x" * 65])
def test_s39_invalid_names(admin, name):
    message = admin.err("vmgroup", "create", f"--name={name}", "--default-datastore=_VM_DS")
    if len(name) > 64:
        assert message == f"Vmgroup name exceeds 64 characters: {name}"
    else:
        assert message == (f"Vmgroup name {name} is invalid, only [a-zA-Z0-9_][a-zA-Z0-9_.-]* "
                           "is allowed")
    assert len(vmgroups(admin)) == 1


def test_s39_empty_name(admin):
    assert admin.err("vmgroup", "create", "--name=", "--default-datastore=_VM_DS") == \
        "Vmgroup name is empty"


def test_description_limit(admin):
    assert admin.err("vmgroup", "create", "--name=vg1", "--default-datastore=_VM_DS",
                     "--description", "d" * 257).startswith("Vmgroup description exceeds 256 characters")


def test_s40_create_twice(admin):
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS")
    assert admin.err("vmgroup create --name=vg1 --default-datastore=_VM_DS") == "Vmgroup vg1 already exists"


def test_s41_rename_variants_move_the_datastore_link(admin, inventory):
    admin.ok("vmgroup create --name=VG_a --default-datastore=DS1 --vm-list=VM2")
    uuid = vmgroups(admin)[1]["Uuid"]
    dockvols = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols")
    os.makedirs(os.path.join(dockvols, uuid))
    os.symlink(uuid, os.path.join(dockvols, "VG_a"))

    admin.ok("vmgroup update --name=VG_a --new-name=VG_b")
    assert "VG_b" in admin.ok("vmgroup ls")
    assert members(admin, "VG_b") == ["VM2"]
    assert not os.path.lexists(os.path.join(dockvols, "VG_a"))
    assert os.readlink(os.path.join(dockvols, "VG_b")) == uuid
    admin.ok("vmgroup vm rm --name=VG_b --vm-list=VM2")
    admin.ok("vmgroup rm --name=VG_b --remove-volumes")
    assert not os.path.lexists(os.path.join(dockvols, "VG_b"))
    assert not os.path.exists(os.path.join(dockvols, uuid))


def test_s42_rename_to_existing(admin):
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS")
    admin.ok("vmgroup create --name=vg2 --default-datastore=_VM_DS")
    assert admin.err("vmgroup update --name=vg1 --new-name=vg2") == "Vmgroup vg2 already exists"


def test_s43_rename_validates_the_new_name(admin):
    """[BUG] fixed: the original validated the old name and stored 'bad name'."""
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS")
    assert admin.err('vmgroup update --name=vg1 --new-name="bad name"') == (
        "Vmgroup name bad name is invalid, only [a-zA-Z0-9_][a-zA-Z0-9_.-]* is allowed")
    assert [r["Name"] for r in vmgroups(admin)] == ["_DEFAULT", "vg1"]


def test_update_is_one_transaction(admin):
    """[BUG] fixed: a failing rename no longer leaves the new default datastore applied."""
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS")
    admin.ok("vmgroup create --name=vg2 --default-datastore=_VM_DS")
    admin.err("vmgroup update --name=vg1 --default-datastore=DS1 --new-name=vg2 --description=x")
    row = vmgroups(admin)[1]
    assert (row["Name"], row["Default_datastore"], row["Description"]) == ("vg1", "_VM_DS", "")
    assert access(admin, "vg1") == [("_VM_DS", "True", "Unset", "Unset")]


def test_description_can_be_cleared(admin):
    """[BUG] fixed: --description "" clears the description."""
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS --description=x")
    admin.ok("vmgroup", "update", "--name=vg1", "--description", "")
    assert vmgroups(admin)[1]["Description"] == ""


@pytest.mark.parametrize("command", [
    "vmgroup rm --name=nosuch", "vmgroup update --name=nosuch --description=x",
    "vmgroup vm add --name=nosuch --vm-list=VM1", "vmgroup vm rm --name=nosuch --vm-list=VM1",
    "vmgroup vm replace --name=nosuch --vm-list=VM1", "vmgroup vm ls --name=nosuch",
    "vmgroup access add --name=nosuch --datastore=DS1",
    "vmgroup access set --name=nosuch --datastore=DS1 --allow-create=True",
    "vmgroup access rm --name=nosuch --datastore=DS1", "vmgroup access ls --name=nosuch"])
def test_s44_unknown_vmgroup(admin, command):
    assert admin.err(command) == "Vmgroup nosuch does not exist"


def test_s45_rm_non_empty_needs_force(admin):
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS --vm-list=VM1")
    assert admin.err("vmgroup rm --name=vg1") == (
        "Cannot delete non-empty vmgroup vg1. Remove VMs from the vmgroup before deleting it.")
    assert admin.ok("vmgroup rm --name=vg1 --force") == "vmgroup rm succeeded\n"
    # VM1 is in no vmgroup any more.
    admin.ok("vmgroup create --name=vg2 --default-datastore=_VM_DS --vm-list=VM1")


def test_s46_rm_refused_while_the_vmgroup_owns_volumes(admin):
    """The check runs before --force removes VMs ([BUG] fixed: nothing changes)."""
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    index_volume("v1", "vg1")
    for command in ("vmgroup rm --name=vg1", "vmgroup rm --name=vg1 --force"):
        assert admin.err(command) == (
            "The vmgroup has volumes in it, these must be removed/migrated before deleting "
            "the vmgroup.")
    assert members(admin, "vg1") == ["VM1"]


def test_s47_remove_and_recreate_default(admin):
    assert admin.ok("vmgroup rm --name=_DEFAULT") == "vmgroup rm succeeded\n"
    assert "_DEFAULT" not in admin.ok("vmgroup ls")
    assert admin.ok("vmgroup create --name=_DEFAULT --default-datastore _VM_DS") == \
        "vmgroup '_DEFAULT' is created.\n"
    assert access(admin, "_DEFAULT") == [("_VM_DS", "True", "Unset", "Unset")]
    admin.ok("vmgroup access add --name=_DEFAULT --datastore=_ALL_DS --allow-create")
    assert ("_ALL_DS", "True", "Unset", "Unset") in access(admin, "_DEFAULT")
    assert vmgroups(admin)[0]["Uuid"] == DEFAULT_UUID


def test_default_cannot_be_recreated_with_vms(admin):
    admin.ok("vmgroup rm --name=_DEFAULT")
    assert admin.err("vmgroup create --name=_DEFAULT --default-datastore=_VM_DS --vm-list=VM1") == \
        "This feature is not supported for vmgroup _DEFAULT."


@pytest.mark.parametrize("verb", ["add", "rm", "replace"])
def test_s48_default_has_no_explicit_members(admin, verb):
    assert admin.err(f"vmgroup vm {verb} --name=_DEFAULT --vm-list=VM2") == \
        "This feature is not supported for vmgroup _DEFAULT."


def test_s49_default_vm_ls(admin):
    assert admin.err("vmgroup vm ls --name=_DEFAULT") == \
        "_DEFAULT tenant contains all VMs which were not added to other tenants"


def test_s50_default_with_volumes_cannot_be_removed(admin):
    index_volume("vC", "_DEFAULT")
    assert admin.err("vmgroup rm --name=_DEFAULT").startswith("The vmgroup has volumes in it")
    assert "_DEFAULT" in admin.ok("vmgroup ls")


# -- §6.D vmgroup vm -------------------------------------------------------------------

def test_s51_empty_vm_ls(admin):
    admin.ok('vmgroup create --name=test_tenant1 --default-datastore=_VM_DS --description="Test tenant1"')
    out = admin.ok("vmgroup vm ls --name=test_tenant1")
    assert out.split("\n")[0].split() == ["Uuid", "Name"]
    assert parse_table(out) == []


def test_s52_duplicate_vms(admin):
    assert admin.err("vmgroup create --name=tenant_add_dup_vms --default-datastore=_VM_DS "
                     "--vm-list=VM1,VM1") == "VMs ['VM1', 'VM1'] contain duplicates, they should be unique"
    assert len(vmgroups(admin)) == 1


def test_s53_to_s57_membership(admin):
    admin.ok("vmgroup create --name=test_tenant1 --default-datastore=_VM_DS")
    assert admin.ok("vmgroup vm add --name=test_tenant1 --vm-list=VM1,VM2") == "vmgroup vm add succeeded\n"
    rows = parse_table(admin.ok("vmgroup vm ls --name=test_tenant1"))
    assert [(r["Uuid"], r["Name"]) for r in rows] == [(VM1_UUID, "VM1"), (VM2_UUID, "VM2")]
    # S-54
    assert admin.err("vmgroup create --name=Test_tenant2 --default-datastore=_VM_DS --vm-list=VM1") == \
        "VM 'VM1' has already been associated with tenant 'test_tenant1', can't add it"
    assert len(vmgroups(admin)) == 2
    # S-55
    admin.ok("vmgroup create --name=Test_tenant3 --default-datastore=_VM_DS")
    for verb in ("add", "replace"):
        assert admin.err(f"vmgroup vm {verb} --name=Test_tenant3 --vm-list=VM1") == \
            "VM 'VM1' has already been associated with tenant 'test_tenant1', can't add it"
    admin.ok("vmgroup rm --name=Test_tenant3 --remove-volumes")
    # S-56, S-57
    admin.ok("vmgroup vm rm --name=test_tenant1 --vm-list=VM2")
    assert members(admin, "test_tenant1") == ["VM1"]
    assert admin.err("vmgroup vm rm --name=test_tenant1 --vm-list=VM2") == \
        "VM 'VM2' has not been associated with tenant 'test_tenant1', cannot remove it"


def test_vms_are_named_by_uuid_too(admin):
    admin.ok(f"vmgroup create --name=vg1 --default-datastore=_VM_DS --vm-list={VM1_UUID.upper()}")
    assert members(admin, "vg1") == ["VM1"]
    admin.ok(f"vmgroup vm rm --name=vg1 --vm-list={VM1_UUID}")
    assert members(admin, "vg1") == []


def test_names_in_vm_list_are_trimmed(admin):
    admin.ok('vmgroup create --name=vg1 --default-datastore=_VM_DS --vm-list="VM1, VM2"')
    assert members(admin, "vg1") == ["VM1", "VM2"]


def test_s58_unknown_vms(admin):
    assert admin.err("vmgroup create --name=VG_x --default-datastore=_VM_DS --vm-list=VM_not_exist") == \
        "Cannot find vm VM_not_exist"
    assert "VG_x" not in admin.ok("vmgroup ls")
    assert admin.err('vmgroup create --name=VG_x --default-datastore=_VM_DS --vm-list=" "') == \
        "VM list cannot be empty"
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS")
    assert admin.err("vmgroup vm add --name=vg1 --vm-list=NOPE1,NOPE2") == "Cannot find vm NOPE1,NOPE2"
    assert admin.err("vmgroup vm add --name=vg1 --vm-list=VM1,,VM2") == \
        "VM list 'VM1,,VM2' contains an empty name"


def test_s59_attached_volume_blocks_create(admin):
    index_volume("vA", "_DEFAULT", attached_to=VM1_UUID)
    assert admin.err("vmgroup create --name=vg_N --default-datastore=DS1 --vm-list=VM1") == \
        "Cannot add VM to vmgroup VM 'VM1' has volumes mounted."
    assert "vg_N" not in admin.ok("vmgroup ls")


def test_s60_attached_volume_blocks_add(admin):
    admin.ok("vmgroup create --name=vg_N --default-datastore=DS1")
    index_volume("vA", "_DEFAULT", attached_to=VM1_UUID)
    assert admin.err("vmgroup vm add --name=vg_N --vm-list=VM1") == \
        "Cannot add VM to vmgroup VM 'VM1' has volumes mounted."
    assert members(admin, "vg_N") == []


def test_s61_attached_volume_blocks_rm(admin):
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    index_volume("v1", "vg1", attached_to=VM1_UUID)
    assert admin.err("vmgroup vm rm --name=vg1 --vm-list=VM1") == \
        "Cannot complete vmgroup vm rm. VM 'VM1' has volumes mounted."
    assert members(admin, "vg1") == ["VM1"]


def test_s62_replace(admin):
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    assert admin.ok("vmgroup vm replace --name=vg1 --vm-list=VM2") == "vmgroup vm replace succeeded\n"
    assert members(admin, "vg1") == ["VM2"]
    # [BUG] fixed: a list that keeps a current member is accepted.
    admin.ok("vmgroup vm replace --name=vg1 --vm-list=VM2,VM1")
    assert members(admin, "vg1") == ["VM2", "VM1"]
    index_volume("v1", "vg1", attached_to=VM2_UUID)
    assert admin.err("vmgroup vm replace --name=vg1 --vm-list=VM1") == \
        "Cannot complete vmgroup vm replace. VM 'VM2' has volumes mounted."
    assert members(admin, "vg1") == ["VM2", "VM1"]


def test_replace_checks_incoming_vms(admin):
    """[BUG] fixed: an incoming VM with attached volumes is refused too."""
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1 --vm-list=VM1")
    index_volume("v3", "_DEFAULT", attached_to="564d1111-2222-3333-4444-555566667777")
    assert admin.err("vmgroup vm replace --name=vg1 --vm-list=VM3") == \
        "Cannot complete vmgroup vm replace. VM 'VM3' has volumes mounted."
    assert admin.err("vmgroup vm replace --name=vg1 --vm-list=") == "Replace VM cannot be empty"
    assert members(admin, "vg1") == ["VM1"]


def test_s63_deleted_member_vm(admin):
    """[BUG] fixed (#1188, #1484): a VM the inventory no longer knows can still
    be removed from its vmgroup by its stored name."""
    admin.ok("vmgroup create --name=VG_d --default-datastore=_VM_DS --vm-list=VM3")
    admin.ok("host vm rm --name=VM3")
    assert parse_table(admin.ok("vmgroup ls"))[1]["VM_list"] == "VM3"
    assert admin.err("vmgroup rm --name=VG_d").startswith("Cannot delete non-empty vmgroup VG_d")
    assert admin.ok("vmgroup vm rm --name=VG_d --vm-list=VM3") == "vmgroup vm rm succeeded\n"
    admin.ok("vmgroup rm --name=VG_d")


def test_s64_add_a_member_again(admin):
    """[NEW]: the same-group check that never fired in the original."""
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS --vm-list=VM1")
    assert admin.err("vmgroup vm add --name=vg1 --vm-list=VM1") == \
        "VM 'VM1' has already been associated with tenant 'vg1', cannot add it again"


def test_listing_shows_the_current_vm_name(admin, inventory):
    admin.ok("vmgroup create --name=vg1 --default-datastore=_VM_DS --vm-list=VM1")
    admin.ok("host vm rm --name=VM1")
    admin.ok(f"host vm add --name=VM1-renamed --uuid={VM1_UUID} --datastore=DS1")
    assert members(admin, "vg1") == ["VM1-renamed"]
    assert vmgroups(admin)[1]["VM_list"] == "VM1-renamed"
