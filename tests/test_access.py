"""Datastore access privileges and quotas: spec admin-cli §6.E, on SQLite and
PostgreSQL, with the size-parsing [BUG]s of §7.3 fixed."""

import pytest

from conftest import parse_table

pytestmark = pytest.mark.usefixtures("configured")


def access(admin, name):
    return [tuple(row.values()) for row in parse_table(admin.ok(f"vmgroup access ls --name={name}"))]


@pytest.fixture
def tenant1(admin):
    admin.ok("vmgroup create --name=test_tenant1 --default-datastore=_VM_DS --vm-list=VM1")
    return "test_tenant1"


def test_defaults_after_init(admin):
    assert access(admin, "_DEFAULT") == [("_ALL_DS", "True", "Unset", "Unset"),
                                         ("_VM_DS", "True", "Unset", "Unset")]


def test_s66_default_datastore_privilege_stays(admin, tenant1):
    assert access(admin, tenant1) == [("_VM_DS", "True", "Unset", "Unset")]
    assert admin.err("vmgroup access rm --name=test_tenant1 --datastore=_VM_DS") == \
        "Removing of access privilege to 'default_datastore' is not supported"


def test_s67_to_s71_walkthrough(admin, tenant1):
    assert admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS1 --volume-maxsize=600MB "
                    "--volume-totalsize=1GB") == "vmgroup access add succeeded\n"
    admin.ok("vmgroup update --name=test_tenant1 --default-datastore=DS1")
    admin.ok("vmgroup access rm --name=test_tenant1 --datastore=_VM_DS")
    assert access(admin, tenant1) == [("DS1", "False", "600.00MB", "1.00GB")]

    # S-68
    for value in ("False", "FALSE", "false", "True", "TRUE", "true"):
        assert admin.ok(f"vmgroup access set --name=test_tenant1 --datastore=DS1 --allow-create={value} "
                        "--volume-maxsize=500MB --volume-totalsize=1GB") == "vmgroup access set succeeded\n"
        assert access(admin, tenant1) == [("DS1", value.capitalize(), "500.00MB", "1.00GB")]
    # S-69
    result = admin("vmgroup access set --name=test_tenant1 --datastore=DS1 --allow-create=INVALID")
    assert (result.exit_code, result.stdout) == (2, "ERROR:Invalid value INVALID for allow-create option\n")
    assert admin.err("vmgroup", "access", "set", "--name=test_tenant1", "--datastore=DS1",
                     "--allow-create=") == "Invalid value  for allow-create option"
    assert access(admin, tenant1) == [("DS1", "True", "500.00MB", "1.00GB")]
    # S-70
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS2 --volume-maxsize=600MB "
             "--volume-totalsize=1GB")
    admin.ok("vmgroup update --name=test_tenant1 --default-datastore=DS2")
    assert parse_table(admin.ok("vmgroup ls"))[1]["Default_datastore"] == "DS2"
    admin.ok("vmgroup update --name=test_tenant1 --default-datastore=DS1")
    admin.ok("vmgroup access rm --name=test_tenant1 --datastore=DS2")
    # S-71
    assert admin.err("vmgroup access rm --name=test_tenant1 --datastore=DS1") == \
        "Removing of access privilege to 'default_datastore' is not supported"
    assert access(admin, tenant1) == [("DS1", "True", "500.00MB", "1.00GB")]


def test_s72_max_larger_than_total(admin, tenant1):
    assert admin.err("vmgroup access add --name=test_tenant1 --datastore=DS2 --volume-maxsize=2GB "
                     "--volume-totalsize=1GB") == "Volume max size 2048MB exceeds the total size 1024MB"
    assert access(admin, tenant1) == [("_VM_DS", "True", "Unset", "Unset")]


def test_s73_merged_limits_are_checked(admin, tenant1):
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS1 --volume-maxsize=600MB")
    assert admin.err("vmgroup access set --name=test_tenant1 --datastore=DS1 --volume-totalsize=500MB") == \
        "Volume max size 600MB exceeds the total size 500MB"
    assert ("DS1", "False", "600.00MB", "Unset") in access(admin, tenant1)


def test_s74_existing_and_missing_privileges(admin, tenant1):
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS1")
    assert admin.err("vmgroup access add --name=test_tenant1 --datastore=DS1") == \
        "Access privilege for (test_tenant1, DS1) already exists"
    for command in ("set --allow-create=True", "rm"):
        assert admin.err(f"vmgroup access {command} --name=test_tenant1 --datastore=DS2") == \
            "No access privilege exists for (test_tenant1, DS2)"


@pytest.mark.parametrize("command", ["add", "set --allow-create=True", "rm"])
def test_s75_unknown_datastore(admin, tenant1, command):
    assert admin.err(f"vmgroup access {command} --name=test_tenant1 --datastore=NoSuchDS") == \
        "Datastore NoSuchDS does not exist"


def test_s75_special_datastores(admin, tenant1):
    rows = lambda: {row[0]: row[1:] for row in access(admin, tenant1)}  # noqa: E731
    assert rows() == {"_VM_DS": ("True", "Unset", "Unset")}  # the default datastore's access
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=_ALL_DS")
    assert rows()["_ALL_DS"] == ("False", "Unset", "Unset")
    admin.ok("vmgroup access set --name=test_tenant1 --datastore=_ALL_DS --allow-create=True")
    assert rows()["_ALL_DS"] == ("True", "Unset", "Unset")
    admin.ok("vmgroup access rm --name=test_tenant1 --datastore=_ALL_DS")
    assert "_ALL_DS" not in rows()
    admin.ok("vmgroup access set --name=test_tenant1 --datastore=_VM_DS --allow-create=False")
    assert rows() == {"_VM_DS": ("False", "Unset", "Unset")}


def test_s76_allow_create_toggles(admin):
    admin.ok("vmgroup create --name=vg --default-datastore=DS1 --vm-list=VM1")
    admin.ok("vmgroup access add --name=vg --datastore=DS2")
    ds2 = lambda: next(row for row in access(admin, "vg") if row[0] == "DS2")  # noqa: E731
    assert "True" not in ds2()
    admin.ok("vmgroup access set --name vg --allow-create True --datastore DS2")
    assert "True" in ds2()
    admin.ok("vmgroup access set --name vg --allow-create False --datastore DS2")
    assert "True" not in ds2()


def test_s77_quotas_on_special_datastores(admin):
    admin.ok("vmgroup create --name=vmgroup1 --default-datastore=DS1")
    admin.ok("vmgroup access add --name=vmgroup1 --datastore=_VM_DS --volume-maxsize=500MB "
             "--volume-totalsize=1GB --allow-create")
    assert ("_VM_DS", "True", "500.00MB", "1.00GB") in access(admin, "vmgroup1")
    admin.ok("vmgroup access set --name=vmgroup1 --datastore=_VM_DS --volume-maxsize=1GB "
             "--volume-totalsize=2GB")
    assert ("_VM_DS", "True", "1.00GB", "2.00GB") in access(admin, "vmgroup1")
    admin.ok("vmgroup access set --name=vmgroup1 --datastore=DS1 --allow-create=True "
             "--volume-maxsize=1000MB")
    assert ("DS1", "True", "1000.00MB", "Unset") in access(admin, "vmgroup1")


def test_s78_tenancy_walkthrough(admin, inventory):
    inventory.add_datastore("datastore3", str(inventory.datastore_by_name("DS1").path) + "/..")
    for vm in ("Photon1", "Photon2", "Photon3"):
        inventory.add_vm(vm, datastore="datastore3")
    for name in ("Product1Dev", "Product1Test"):
        admin.ok(f"vmgroup create --name={name} --default-datastore=datastore3")
        assert access(admin, name) == [("datastore3", "True", "Unset", "Unset")]
    assert admin.ok("vmgroup rm --name=_DEFAULT") == "vmgroup rm succeeded\n"
    assert [r["Name"] for r in parse_table(admin.ok("vmgroup ls"))] == ["Product1Dev", "Product1Test"]
    admin.ok("vmgroup vm add --vm-list=Photon1,Photon2,Photon3 --name=Product1Dev")
    assert parse_table(admin.ok("vmgroup ls"))[0]["VM_list"] == "Photon1,Photon2,Photon3"
    for name, total in (("Product1Dev", "20GB"), ("Product1Test", "40GB")):
        admin.ok(f"vmgroup access set --name={name} --datastore=datastore3 --volume-maxsize=1GB "
                 f"--volume-totalsize={total}")
        assert access(admin, name) == [("datastore3", "True", "1.00GB", f"{total[:2]}.00GB")]


@pytest.mark.parametrize("size", ["1.5GB", "100", "500M", "-5GB", "abc", "5PB", "1 GB"])
def test_s79_invalid_sizes_are_refused(admin, tenant1, size):
    """[BUG] fixed: the original silently ignored these."""
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS1 --volume-maxsize=600MB")
    for option in ("--volume-maxsize", "--volume-totalsize"):
        assert admin.err("vmgroup", "access", "set", "--name=test_tenant1", "--datastore=DS1",
                         f"{option}={size}").startswith("Invalid volume size specified.")
    assert ("DS1", "False", "600.00MB", "Unset") in access(admin, tenant1)


def test_s79_sizes_in_any_case(admin, tenant1):
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS1 --volume-maxsize=500mb "
             "--volume-totalsize=2tb")
    assert ("DS1", "False", "500.00MB", "2.00TB") in access(admin, tenant1)


@pytest.mark.parametrize("word", ["unset", "UNSET", "0", "0MB"])
def test_limits_can_be_reset_to_unlimited(admin, tenant1, word):
    """[BUG] fixed: a limit can go back to Unset."""
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS1 --volume-maxsize=1GB "
             "--volume-totalsize=2GB")
    admin.ok(f"vmgroup access set --name=test_tenant1 --datastore=DS1 --volume-maxsize={word}")
    assert ("DS1", "False", "Unset", "2.00GB") in access(admin, tenant1)
    admin.ok(f"vmgroup access set --name=test_tenant1 --datastore=DS1 --volume-totalsize={word}")
    assert ("DS1", "False", "Unset", "Unset") in access(admin, tenant1)


def test_access_ls_json_is_typed(admin, tenant1):
    import json

    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS1 --volume-maxsize=1536MB")
    records = json.loads(admin.ok("vmgroup access ls --name=test_tenant1 --output-format=json"))
    assert records == [
        {"datastore": "_VM_DS", "allow_create": True, "max_volume_size": None, "total_size": None},
        {"datastore": "DS1", "allow_create": False, "max_volume_size": 1536, "total_size": None}]


def test_removed_datastore_shows_empty_name(admin, inventory, tenant1):
    inventory.add_datastore("DS9", str(inventory.datastore_by_name("DS1").path) + "/../DS2/..")
    admin.ok("vmgroup access add --name=test_tenant1 --datastore=DS9")
    inventory.remove_datastore("DS9")
    assert ("", "False", "Unset", "Unset") in access(admin, tenant1)
