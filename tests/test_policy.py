"""Storage policies: spec admin-cli §6.G and esx-service §17 "Policies", on the
local backend (which records a volume's policy in its metadata)."""

import json

import pytest

from conftest import parse_table

pytestmark = pytest.mark.usefixtures("configured")

CONTENT = '(("proportionalCapacity" i0)("hostFailuresToTolerate" i0))'


def test_s88_s89_create_and_list(admin):
    assert admin.ok("policy ls").splitlines()[0].split() == ["Policy", "Name", "Policy", "Content", "Active",
                                                             "Kind", "Applies", "To"]
    assert admin.ok("policy", "create", "--name", "some-policy", "--content", CONTENT) == \
        "Successfully created policy: some-policy\n"
    assert parse_table(admin.ok("policy ls")) == [
        {"Policy Name": "some-policy", "Policy Content": CONTENT, "Active": "Unused", "Kind": "recorded",
         "Applies To": "every datastore (kept with the volume)"}]


def test_s90_in_use(executor, admin, inventory):
    admin.ok("policy", "create", "--name", "some-policy", "--content", CONTENT)
    executor.ok("VM1", "create", "pv", {"vsan-policy-name": "some-policy"})
    assert parse_table(admin.ok("policy ls"))[0]["Active"] == "In use by 1 volumes"
    assert parse_table(admin.ok("volume ls -c volume,policy")) == [{"Volume": "pv", "Policy": "some-policy"}]
    assert executor.ok("VM1", "get", "pv")["vsan-policy-name"] == "some-policy"
    assert admin.err("policy rm --name=some-policy") == "Cannot remove. Policy is in use by pv@DS1"
    executor.ok("VM1", "remove", "pv")
    assert admin.ok("policy rm --name=some-policy") == "Successfully removed policy: some-policy\n"


def test_s91_s92_twice_and_missing(admin):
    admin.ok("policy", "create", "--name", "p", "--content", CONTENT)
    assert admin.err("policy", "create", "--name", "p", "--content", "other") == "Error: Policy already exists"
    assert json.loads(admin.ok("policy ls --output-format=json")) == [
        {"name": "p", "content": CONTENT, "volumes": 0, "kind": "recorded",
         "applies": "every datastore (kept with the volume)"}]
    assert admin.err("policy rm --name=test_policy") == "Policy test_policy does not exist"


def test_s93_update_reapplies(executor, admin, inventory):
    admin.ok("policy", "create", "--name", "some-policy", "--content", CONTENT)
    for name in ("a", "b"):
        executor.ok("VM1", "create", name, {"vsan-policy-name": "some-policy"})
    new = '(("proportionalCapacity" i1))'
    assert admin.ok("policy", "update", "--name", "some-policy", "--content", new) == \
        "Successfully updated policy some-policy\nApplied to 2 volumes.\n"
    ds = inventory.datastore_by_name("DS1")
    for name in ("a", "b"):
        meta = inventory.read_metadata(inventory.descriptor(ds, "11111111-1111-1111-1111-111111111111", name))
        assert meta["storagePolicy"] == {"name": "some-policy", "content": new}
    assert admin.err("policy", "update", "--name", "some-policy", "--content", f"  {new} ") == \
        "Error: New policy is identical to old policy. Ignoring."
    assert admin.err("policy", "update", "--name", "nosuch", "--content", new) == \
        "Error: Policy nosuch does not exist"


def test_update_reports_volumes_it_could_not_reach(executor, admin, inventory):
    import os

    admin.ok("policy", "create", "--name", "p", "--content", CONTENT)
    for name in ("a", "b"):
        executor.ok("VM1", "create", name, {"vsan-policy-name": "p"})
    ds = inventory.datastore_by_name("DS1")
    os.unlink(inventory.descriptor(ds, "11111111-1111-1111-1111-111111111111", "b")[:-5] + ".vmfd")
    new = '(("proportionalCapacity" i1))'
    assert admin.err("policy", "update", "--name", "p", "--content", new) == \
        "Successfully updated: 1 volumes.\nFailed to update:     b@DS1 volumes"
    assert parse_table(admin.ok("policy ls"))[0]["Policy Content"] == new


def test_s94_content_is_checked(admin):
    """[NEW] The original took any text (S-94) and failed at the volume's create."""
    for content in ('(("wrongKey" i50)', "((", '(("x" iy))', "fast please"):
        assert admin.err("policy", "create", "--name", "invalidPolicy", "--content", content).startswith(
            "Error: Invalid policy string")
    admin.ok("policy", "create", "--name", "p", "--content", CONTENT)
    assert admin.err("policy", "update", "--name", "p", "--content", "((") == "Error: Invalid policy string"
    assert parse_table(admin.ok("policy ls")) == [
        {"Policy Name": "p", "Policy Content": CONTENT, "Active": "Unused", "Kind": "recorded",
         "Applies To": "every datastore (kept with the volume)"}]


def test_policy_names_are_validated(admin):
    assert admin.err("policy", "create", "--name", "../x", "--content", "c").startswith(
        "Policy name ../x is invalid")
