"""The vsphere backend behind a real vmdk-opsd, against the simulator as a
vCenter and as a standalone ESX host, with authorization from the auth DB."""

import json

import pytest

from conftest import parse_table


@pytest.fixture(params=["vpx", "esx"])
def vsphere_home(request, home, vcsim_servers, admin, tmp_path):
    url = vcsim_servers(request.param)
    (tmp_path / "password").write_text("pass\n")
    (home / "vsphere.json").write_text(json.dumps({
        "host": url.hostname, "port": url.port, "user": "user",
        "password_file": str(tmp_path / "password"), "insecure": True}))
    admin.ok("config init --local")
    return home


def test_executor_on_vsphere(vsphere_home, admin):
    from executor import Executor
    from vmdkops_admin.backends import get_backend

    backend = get_backend()
    assert backend.name == "vsphere"
    vm = sorted(backend.vms(), key=lambda v: v.name)[0]
    assert admin.err("host vm add --name=x") == "The vsphere backend's inventory is managed in vSphere"
    assert vm.name in admin.ok("host vm ls")
    executor = Executor(vsphere_home).start()
    try:
        executor.ok(vm.name, "create", "v1", {"size": "10mb", "fstype": "ext4"})
        info = executor.ok(vm.name, "get", "v1")
        assert (info["capacity"]["size"], info["datastore"], info["created by VM"], info["status"]) == (
            "10MB", vm.datastore, vm.name, "detached")
        assert executor.ok(vm.name, "list") == [{"Name": f"v1@{vm.datastore}", "Attributes": {}}]
        reply = executor.ok(vm.name, "attach", "v1")
        assert reply["Unit"] in [str(u) for u in range(16) if u != 7]
        assert executor.ok(vm.name, "attach", "v1") == reply
        assert executor.ok(vm.name, "get", "v1")["status"] == "attached"
        assert executor.err(vm.name, "remove", "v1") == f"Failed to remove volume v1, in use by VM = {vm.name}."
        executor.ok(vm.name, "detach", "v1")
        executor.ok(vm.name, "create", "v2", {"clone-from": "v1"})
        assert executor.ok(vm.name, "get", "v2")["clone-from"] == "v1"
        rows = parse_table(admin.ok("volume ls --vmgroup=_DEFAULT -c volume,datastore,vmgroup,capacity"))
        assert [(r["Volume"], r["Capacity"]) for r in rows] == [("v1", "10MB"), ("v2", "10MB")]
        admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=25MB")
        assert executor.err(vm.name, "create", "v3", {"size": "10mb"}) == \
            "The total volume size exceeds the usage quota"
        for name in ("v1", "v2"):
            executor.ok(vm.name, "remove", name)
        assert executor.ok(vm.name, "list") == []
    finally:
        executor.stop()
