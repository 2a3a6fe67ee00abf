"""The local backend's inventory and ``vmdkops_admin host``."""

import json
import os
import socket

from conftest import parse_table


def test_this_machine_is_registered_on_first_use(admin, home):
    vms = parse_table(admin.ok("host vm ls"))
    assert [(vm["Name"], vm["Datastore"]) for vm in vms] == [(socket.gethostname(), "datastore1")]
    datastores = json.loads(admin.ok("host datastore ls --output-format=json"))
    assert [(ds["name"], ds["path"]) for ds in datastores] == [
        ("datastore1", str(home / "datastores" / "datastore1"))]
    assert datastores[0]["url"] == f"ds://{home}/datastores/datastore1/"
    assert datastores[0]["capacity_mb"] >= datastores[0]["free_mb"] > 0


def test_datastores(admin, home, tmp_path):
    (tmp_path / "d1").mkdir()
    assert admin.ok(f"host datastore add --name=DS1 --path={tmp_path}/d1") == \
        f"datastore 'DS1' added at {tmp_path}/d1\n"
    assert admin.err(f"host datastore add --name=DS1 --path={tmp_path}") == "Datastore DS1 already exists"
    assert admin.err(f"host datastore add --name=DS9 --path={tmp_path}/d1/") == \
        f"Directory {tmp_path}/d1/ is already datastore DS1"
    assert admin.err(f"host datastore add --name=DS9 --path={tmp_path}/nope") == \
        f"Directory {tmp_path}/nope does not exist"
    for bad in ("_X", "a/b", "a@b", "..", "x" * 101, ""):
        assert admin.err("host", "datastore", "add", f"--name={bad}", f"--path={tmp_path}").startswith(
            f"Datastore name '{bad}'")
    admin.ok("host vm add --name=VMx --datastore=DS1")
    assert admin.err("host datastore rm --name=DS1") == \
        "Datastore DS1 is the home datastore of VM(s) VMx; remove or move them first"
    admin.ok("host vm rm --name=VMx")
    assert admin.ok("host datastore rm --name=DS1") == "datastore 'DS1' removed\n"
    assert os.path.isdir(tmp_path / "d1")
    assert admin.err("host datastore rm --name=DS1") == "Datastore DS1 does not exist"


def test_vms(admin, home):
    out = admin.ok("host vm add --name=VM1 --uuid=564DAC12-B1A0-F735-0DF3-BCEB00B30340")
    assert out == "VM 'VM1' added with uuid 564dac12-b1a0-f735-0df3-bceb00b30340\n"
    assert admin.err("host vm add --name=VM1") == "VM VM1 already exists"
    assert admin.err("host vm add --name=VM2 --uuid=564dac12-b1a0-f735-0df3-bceb00b30340") == \
        "VM uuid 564dac12-b1a0-f735-0df3-bceb00b30340 already belongs to VM VM1"
    assert admin.err("host vm add --name=VM2 --uuid=nope") == "'nope' is not a valid UUID"
    assert admin.err("host vm add --name=VM2 --datastore=nope") == "Datastore nope does not exist"
    assert admin.err("host vm add --name=a,b").startswith("VM name 'a,b' is invalid")
    rows = parse_table(admin.ok("host vm ls"))
    assert rows[-1] == {"Name": "VM1", "Uuid": "564dac12-b1a0-f735-0df3-bceb00b30340",
                        "Datastore": "datastore1", "Last_report": "never"}
    admin.ok("host vm rm --name=VM1")
    assert admin.err("host vm rm --name=VM1") == "Cannot find vm VM1"


def test_a_vm_powered_off_gives_its_volumes_back(executor, admin, configured):
    """``host vm power``: the local backend's power semantics, as vSphere's watch."""
    executor.ok("VM1", "create", "held")
    executor.ok("VM1", "attach", "held")
    assert admin.err("host vm power --name=nosuch off") == "Cannot find vm nosuch"
    assert admin.ok("host vm power --name=VM1 off") == "VM VM1 is powered off; detached held@DS1\n"
    assert parse_table(admin.ok("volume ls -c volume,attached-to")) == [{"Volume": "held", "Attached-to": "detached"}]
    assert executor.ok("VM1", "get", "held")["status"] == "detached"
    assert executor.err("VM1", "attach", "held") == "VM VM1 is powered off"
    assert executor.ok("VM3", "attach", "held@DS1")["Unit"] == "0"
    executor.ok("VM3", "detach", "held@DS1")
    assert admin.ok("host vm power --name=VM1 on") == "VM VM1 is powered on\n"
    executor.ok("VM1", "attach", "held")
    executor.ok("VM1", "detach", "held")
    events = json.loads(admin.ok("report audit --output-format=json"))
    assert [e["action"] for e in events if e["action"].startswith("host vm power")] == \
        ["host vm power", "host vm power", "host vm power"]
