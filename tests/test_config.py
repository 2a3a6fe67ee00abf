"""Config DB modes and ``config init|rm|mv|status``: spec admin-cli §6.B.

The original printed two ESXi-only warnings at ``config init --local`` (the
feature being EXPERIMENTAL, and configuration not surviving an ESXi reboot);
neither is true here, so ``init`` prints only what it did."""

import glob
import os
import stat

import pytest

from conftest import parse_table

RM_NEEDS_FLAG_START = "\n        DB removal is irreversible operation. Please use '--local' flag"


def mode(admin):
    return admin.ok("config status").split("\n")[0]


@pytest.fixture
def single_node(admin, inventory, home):
    assert admin.ok("config init --local") == f"Creating new DB at {home}/auth-db\n"
    return home


def test_s18_reset_and_init(admin, inventory, home):
    for _ in range(2):
        result = admin("config rm --local --confirm")
        assert (result.exit_code, result.stdout) == (0, "")
    assert admin.ok("config init --local") == f"Creating new DB at {home}/auth-db\n"
    assert "SingleNode" in mode(admin)
    assert admin.ok("config status").split("\n")[1:3] == [f"DB_LocalPath: {home}/auth-db",
                                                          "DB_SharedLocation: N/A"]
    assert stat.S_IMODE(os.stat(home / "auth-db").st_mode) == 0o600
    rows = parse_table(admin.ok("vmgroup ls"))
    assert rows == [{"Uuid": "11111111-1111-1111-1111-111111111111", "Name": "_DEFAULT",
                     "Description": "This is a default vmgroup", "Default_datastore": "_VM_DS",
                     "VM_list": "", "Takeover_after": "30s"}]


def test_s19_init_twice(admin, single_node):
    assert admin.err("config init --local") == (
        "Config DB is already initialized. Use 'rm --local' or 'rm --unlink' to reset. "
        f"Additional information: DB_Mode: SingleNode (local DB exists), "
        f"DB_LocalPath: {single_node}/auth-db, DB_SharedLocation: N/A")
    assert "SingleNode" in mode(admin)


def test_s20_init_needs_exactly_one_place(admin, inventory):
    assert admin.err("config init") == \
        "Error: one of '--datastore', '--local' or '--db-url' have to be set"
    assert admin.err("config init --local --datastore=DS1") == \
        "Error: only one of '--datastore', '--local' or '--db-url' can be set"
    assert admin.err("config init --datastore=NoSuchDS") == "No such datastore: NoSuchDS"
    assert "NotConfigured" in mode(admin)


def test_s21_rm_needs_a_flag_and_confirmation(admin, single_node):
    assert admin.err("config rm").startswith(RM_NEEDS_FLAG_START)
    assert admin.err("config rm --local --unlink --confirm").startswith(
        "\n        Cannot use '--local' and '--unlink' together.")
    assert admin.err("config rm --local") == \
        "Warning: For extra safety, removal operation requires '--confirm' flag."
    assert "SingleNode" in mode(admin)


def test_s22_rm_single_node_keeps_a_backup(admin, single_node):
    assert admin.err("config rm --unlink --confirm") == (
        "'rm --unlink' is not supported when Config DB is in SingleNode mode. "
        "Use 'rm --local' to remove local DB configuration.")
    out = admin.ok("config rm --local --confirm")
    assert out.startswith(f"Moved {single_node}/auth-db to backup file {single_node}/auth-db.bak_")
    assert len(glob.glob(f"{single_node}/auth-db.bak_*")) == 1
    assert "NotConfigured" in mode(admin)


def test_s23_rm_not_configured(admin, home):
    result = admin("config rm --local --confirm")
    assert (result.exit_code, result.stdout) == (0, "")


@pytest.mark.parametrize("command", [
    "vmgroup create --name MY --default-datastore=_VM_DS", "vmgroup access ls --name=_DEFAULT",
    "vmgroup vm add --name=MY --vm-list=VM1", "vmgroup vm ls --name=MY",
    "vmgroup update --name=_DEFAULT --description=x", "vmgroup rm --name=MY",
    "vmgroup access add --name=_DEFAULT --datastore=DS1", "config upgrade"])
def test_s24_not_configured_guards(admin, inventory, command):
    assert admin.err(command) == \
        "Configuration not found. Please init configuration with 'vmdkops_admin config init'."


def test_s24_not_configured_listings(admin, inventory):
    assert parse_table(admin.ok("vmgroup ls"))[0]["Name"] == "_DEFAULT"
    assert admin.err("vmgroup vm ls --name=_DEFAULT") == \
        "_DEFAULT tenant contains all VMs which were not added to other tenants"


def other_host(monkeypatch, tmp_path, inventory, name):
    """Point the state root at a second host that sees the same datastores."""
    from vmdkops_admin.backends.local import LocalBackend
    from vmdkops_admin.paths import layout

    root = tmp_path / name
    root.mkdir()
    monkeypatch.setenv("VMDKOPS_HOME", str(root))
    backend = LocalBackend(layout())
    for ds in inventory.datastores():
        if ds.name != "datastore1":
            backend.add_datastore(ds.name, ds.path)
    return root


def test_s25_multi_node_on_a_datastore(admin, inventory, home, tmp_path, monkeypatch):
    shared = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols", "vmdkops_config.db")
    assert admin.ok("config init --datastore=DS1") == (
        f"Creating new DB at {shared}\nCreating a symlink to {shared} at {home}/auth-db\n")
    assert os.readlink(home / "auth-db") == shared
    assert admin.ok("config status") == (
        "DB_Mode: MultiNode (local symlink pointing to shared DB)\n"
        f"DB_LocalPath: {home}/auth-db\nDB_SharedLocation: {shared}\n")
    admin.ok("vmgroup create --name=shared_vg --default-datastore=DS1")

    host2 = other_host(monkeypatch, tmp_path, inventory, "host2")
    assert admin.ok("config init --datastore=DS1") == \
        f"Creating a symlink to {shared} at {host2}/auth-db\n"
    assert "shared_vg" in admin.ok("vmgroup ls")
    assert admin.err("config rm --local --confirm") == (
        "'rm --local' is not supported when Config DB is in MultiNode mode. "
        "Use 'rm --unlink' to remove the local link to shared DB.")
    assert admin.ok("config rm --unlink --confirm") == f"Removed link {host2}/auth-db\n"
    assert os.path.isfile(shared)
    assert "NotConfigured" in mode(admin)


def test_s26_config_db_on_another_datastore(admin, inventory, home):
    admin.ok("config init --datastore=DS1")
    admin.ok("config rm --unlink --confirm")
    shared = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols", "vmdkops_config.db")
    assert admin.err("config init --datastore=DS2") == (
        "Found Config DB on other datastores. Add '--force' flag to force the request execution. "
        f"Additional information: DS1 ({shared})")
    admin.ok("config init --datastore=DS2 --force")
    assert "MultiNode" in mode(admin)


def test_s27_broken_link(admin, inventory, home):
    os.symlink("/nonexistent/vmdkops_config.db", home / "auth-db")
    broken = f"DB access error at {home}/auth-db: BrokenLink (Broken link or corrupted DB file)"
    assert mode(admin) == "DB_Mode: BrokenLink (Broken link or corrupted DB file)"
    assert admin.err("config init --local") == broken
    assert admin.err("vmgroup ls") == broken
    assert admin.err("vmgroup create --name=x --default-datastore=_VM_DS") == broken
    assert admin.ok("config rm --local --confirm") == \
        f'Received error - removing configuration anyways. Err: "{broken}"\n'
    assert "NotConfigured" in mode(admin)


def test_link_to_something_that_is_not_a_db(admin, inventory, home, tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    os.symlink(junk, home / "auth-db")
    assert "BrokenLink" in mode(admin)


def test_corrupted_local_db_is_refused_not_crashed(admin, inventory, home):
    (home / "auth-db").write_text("not a database")
    assert admin.err("vmgroup ls") == f"DB access error at {home}/auth-db: file is not a database"
    assert admin.ok("config rm --local --confirm --no-backup") == f"Removed {home}/auth-db\n"


def test_s28_mv_moves_between_host_and_datastore(admin, single_node, inventory):
    assert admin.err("config mv --to=DS2") == \
        "Config DB move to DS2 requires '--force' flag to execute the request."
    admin.ok("vmgroup create --name=vg1 --default-datastore=DS1")
    shared = os.path.join(inventory.datastore_by_name("DS2").path, "dockvols", "vmdkops_config.db")
    assert admin.ok("config mv --to=DS2 --force") == (
        f"Moved {single_node}/auth-db to {shared}\n"
        f"Creating a symlink to {shared} at {single_node}/auth-db\n")
    assert admin.ok("config status").split("\n")[2] == f"DB_SharedLocation: {shared}"
    assert "vg1" in admin.ok("vmgroup ls")
    admin.ok("config mv --local --force")
    assert "SingleNode" in mode(admin)
    assert "vg1" in admin.ok("vmgroup ls")
    assert os.path.isfile(shared)


def test_mv_refusals(admin, inventory, home):
    assert admin.err("config mv --to=DS1 --force").startswith("Nothing to move - Mode=NotConfigured")
    admin.ok("config init --local")
    assert admin.err("config mv --to=NoSuchDS --force") == "No such datastore: NoSuchDS"
    assert admin.err("config mv --local --force") == f"Config DB is already local at {home}/auth-db"


def test_s29_rm_without_backup(admin, single_node):
    """[BUG] fixed: --no-backup removes the DB instead of doing nothing."""
    assert admin.ok("config rm --local --no-backup --confirm") == f"Removed {single_node}/auth-db\n"
    assert not os.path.exists(single_node / "auth-db")
    assert glob.glob(f"{single_node}/auth-db.bak_*") == []
    assert "NotConfigured" in mode(admin)


def test_multi_node_on_a_database_url(admin, inventory, home, tmp_path, monkeypatch, pg_url):
    from vmdkops_admin.db import display_url

    shown = display_url(pg_url)
    assert admin.ok("config", "init", "--db-url", pg_url) == \
        f"Creating new DB at {shown}\nUsing shared database {shown}\n"
    assert stat.S_IMODE(os.stat(home / "auth-db.url").st_mode) == 0o600
    assert admin.ok("config status") == (
        f"DB_Mode: MultiNode (shared database URL)\nDB_LocalPath: {home}/auth-db.url\n"
        f"DB_SharedLocation: {shown}\n")
    admin.ok("vmgroup create --name=shared_vg --default-datastore=_VM_DS")

    host2 = other_host(monkeypatch, tmp_path, inventory, "host2")
    assert admin.ok("config", "init", "--db-url", pg_url) == f"Using shared database {shown}\n"
    assert "shared_vg" in admin.ok("vmgroup ls")
    assert admin.err("config rm --local --confirm").startswith("'rm --local' is not supported")
    assert admin.ok("config rm --unlink --confirm") == f"Removed link {host2}/auth-db.url\n"
    assert "NotConfigured" in mode(admin)
    monkeypatch.setenv("VMDKOPS_HOME", str(home))
    assert "shared_vg" in admin.ok("vmgroup ls")


def test_database_url_password_is_never_shown(admin, inventory, home, pg_server):
    url = pg_server.replace("postgres@", "postgres:s3cret@") + "/postgres_nosuchdb"
    message = admin.err("config", "init", "--db-url", url)
    assert message.startswith("DB connection error at postgresql://postgres:***@")
    assert "s3cret" not in message
    assert not os.path.exists(home / "auth-db.url")
    assert "NotConfigured" in mode(admin)


@pytest.mark.parametrize("url", ["", "xyz", "../../etc", "mysql://a/b", "sqlite:////nonexistent/dir/x.db",
                                 "postgresql://127.0.0.1:1/x"])
def test_bad_database_urls(admin, inventory, home, url):
    message = admin.err("config", "init", "--db-url", url)
    assert message.startswith(("Invalid database URL (", "DB connection error at "))
    assert not os.path.exists(home / "auth-db.url")
