"""The vsphere backend behind a real vmdk-opsd, against the simulator as a
vCenter and as a standalone ESX host, with authorization from the auth DB."""

import json
import os
import time
import urllib.parse

import pytest

from conftest import parse_table


def use_vsphere(home, url, tmp_path, admin):
    """vsphere.json for a simulator, with the password in a file as an admin keeps it."""
    (tmp_path / "password").write_text("pass\n")
    (home / "vsphere.json").write_text(json.dumps({
        "host": url.hostname, "port": url.port, "user": "user",
        "password_file": str(tmp_path / "password"), "insecure": True}))
    admin.ok("config init --local")
    return home


@pytest.fixture(params=["vpx", "esx"])
def vsphere_home(request, home, vcsim_servers, admin, tmp_path):
    return use_vsphere(home, vcsim_servers(request.param), tmp_path, admin)


@pytest.fixture
def vcenter_home(home, vcsim_servers, admin, tmp_path):
    return use_vsphere(home, vcsim_servers("vpx"), tmp_path, admin)


@pytest.fixture
def esx_home(home, vcsim_servers, admin, tmp_path):
    return use_vsphere(home, vcsim_servers("esx"), tmp_path, admin)


def test_no_command_leaves_a_vcenter_session_open(vcenter_home, admin):
    """vCenter keeps a session until it times out, and limits them: 20 admin
    commands, each its own process (a cron report every minute, say), and an
    executor started and stopped leave none open."""
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    counter = get_backend()
    try:
        before = len(counter.content.sessionManager.sessionList)
        for command in ["status", "volume ls", "host vm ls", "report usage", "vmgroup ls"] * 4:
            result = admin.proc(*command.split())
            assert result.returncode == 0, (command, result.stdout, result.stderr)
        Executor(vcenter_home).start("--backend", "vsphere").stop()
        assert len(counter.content.sessionManager.sessionList) == before
    finally:
        counter.close()


def test_executor_on_vsphere(vsphere_home, admin):
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    backend = get_backend()
    assert backend.name == "vsphere"
    vm = sorted(backend.vms(), key=lambda v: v.name)[0]
    assert admin.err("host vm add --name=x") == "The vsphere backend's inventory is managed in vSphere"
    assert admin.err(f"host vm power --name={vm.name} off") == (
        "The vsphere backend's VMs are powered in vSphere: vmdk-opsd detaches the volumes of a VM "
        "that powers off")
    assert vm.name in admin.ok("host vm ls")
    executor = Executor(vsphere_home).start("--backend", "vsphere")
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
        # The simulator has no ExtendVirtualDisk_Task: resize says so and changes nothing.
        assert admin.err(f"volume resize --volume=v1@{vm.datastore} --size=12MB").startswith(
            "Failed to extend volume: ")
        assert admin.ok("volume reconcile --dry-run") == "Index, metadata, disks and attachments agree.\n"
        executor.ok(vm.name, "create", "v3", {"size": "5mb"})  # 20 of 25 MB were used, as before
        for name in ("v1", "v2", "v3"):
            executor.ok(vm.name, "remove", name)
        assert executor.ok(vm.name, "list") == []
    finally:
        executor.stop()


def test_backend_vsphere_without_settings_says_so(home):
    import subprocess
    import sys

    from rig.executor import REPO

    result = subprocess.run([sys.executable, "-m", "vmdkops_admin.executor.main", "--backend", "vsphere"],
                            cwd=REPO, env=dict(os.environ, VMDKOPS_HOME=str(home)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith(f"vmdk-opsd: Cannot read the vSphere settings {home}/vsphere.json: ")


def test_status_shows_the_vsphere_session(vsphere_home, admin, vcsim_servers):
    lines = admin.ok("status").splitlines()
    assert "Backend: vsphere" in lines
    session = next(line for line in lines if line.startswith("Session: "))
    assert session.startswith("Session: user since ")
    assert any(line.startswith("Product: ") and line.endswith(("(VirtualCenter)", "(HostAgent)"))
               for line in lines)
    assert "TLS: not verified (insecure)" in lines
    assert "Session: ?" in admin.ok("status --fast").splitlines()
    settings = json.loads((vsphere_home / "vsphere.json").read_text())
    (vsphere_home / "vsphere.json").write_text(json.dumps(dict(settings, port=1)))
    lines = admin.ok("status").splitlines()
    assert next(line for line in lines if line.startswith("Session: ")).startswith(
        "Session: not connected (Cannot reach vSphere at 127.0.0.1:")


def test_a_shared_db_file_on_a_vsphere_datastore_is_refused(vsphere_home, admin, tmp_path, monkeypatch):
    """vSphere datastores are not directories of this host: the shared DB is
    PostgreSQL there, and a refused init leaves nothing behind."""
    from vmdkops_admin.backends import get_backend

    datastore = get_backend().datastores()[0].name
    admin.ok("config rm --local --no-backup --confirm")
    monkeypatch.chdir(tmp_path)
    assert admin.err(f"config init --datastore={datastore}") == (
        f"Datastore {datastore} is not a directory of this host on the vsphere backend, so it "
        "cannot hold a shared auth DB file: share a PostgreSQL database instead ('config init "
        "--db-url postgresql://user:password@host/database')")
    assert "NotConfigured" in admin.ok("config status")
    assert not os.path.lexists(vsphere_home / "auth-db")
    assert not any(name.startswith("[") for name in os.listdir(tmp_path))


def test_host_datastore_ls_shows_vsphere_space(vsphere_home, admin):
    from vmdkops_admin.backends import get_backend

    rows = parse_table(admin.ok("host datastore ls"))
    stores = get_backend().datastores()
    assert [r["Name"] for r in rows] == [ds.name for ds in stores]
    for row in rows:
        assert row["Capacity"].endswith("MB") and int(row["Capacity"][:-2]) > 0
        assert 0 <= int(row["Free"][:-2]) <= int(row["Capacity"][:-2])


def test_volume_ls_round_trips_do_not_grow_with_volumes(vsphere_home, admin):
    """``volume ls`` reads sizes from one datastore-browser search per datastore:
    3 volumes or 12, the same number of vSphere API round trips."""
    from rig.executor import Executor
    from vmdkops_admin.admin.volumes import list_volumes
    from vmdkops_admin.backends import get_backend
    from vmdkops_admin.db import modes

    vm = sorted(get_backend().vms(), key=lambda v: v.name)[0]
    executor = Executor(vsphere_home).start()

    def listed():
        backend = get_backend()
        backend.datastores()  # the session and its first lookups, out of the count
        before = backend.round_trips
        with modes.reader() as query:
            records = list_volumes(query, backend)
        return records, backend.round_trips - before

    try:
        counts = []
        for count in (3, 12):
            for i in range(len(counts) and 3, count):
                executor.ok(vm.name, "create", f"rt{i}", {"size": "10mb"})
            records, trips = listed()
            assert len(records) == count
            assert all(r["used_mb"] is not None for r in records)
            counts.append(trips)
        assert counts[0] == counts[1]
        assert counts[1] <= 3 * len(get_backend().datastores()) + 2
        rows = parse_table(admin.ok("volume ls -c volume,used"))
        assert len(rows) == 12 and all(r["Used"] != "N/A" for r in rows)
        for i in range(12):
            executor.ok(vm.name, "remove", f"rt{i}")
    finally:
        executor.stop()


def test_executor_start_up_round_trips_do_not_grow_with_volumes(vsphere_home, admin):
    """vmdk-opsd reconciles at start from one listing per datastore and one
    query of the VMs' disks: counted by the simulator itself, the start with
    100 volumes makes as many requests as the start with 10."""
    import json as json_

    from rig import vcsim
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    url = urllib.parse.urlparse("https://" + json_.loads((vsphere_home / "vsphere.json").read_text())["host"]
                                + f":{json_.loads((vsphere_home / 'vsphere.json').read_text())['port']}")
    vm = sorted(get_backend().vms(), key=lambda v: v.name)[0]
    executor = Executor(vsphere_home).start("--backend", "vsphere")
    made, counts = 0, []
    try:
        for count in (10, 100):
            for i in range(made, count):
                executor.ok(vm.name, "create", f"su{i}", {"size": "10mb"})
            made = count
            executor.stop()
            executor.start("--backend", "vsphere")  # the first start may index what others left
            executor.stop()
            before = vcsim.requests_served(url)
            executor.start("--backend", "vsphere")
            counts.append(vcsim.requests_served(url) - before)
        assert counts[1] <= counts[0] + 2, counts
        assert counts[1] <= 16 + 3 * len(get_backend().datastores()), counts
    finally:
        for i in range(made):
            executor.call(vm.name, "remove", f"su{i}")
        executor.stop()


def make_vm(backend, name, uuid=None):
    """A VM of the simulator with one empty PVSCSI controller (bus 0) and no disk."""
    from pyVmomi import vim

    datacenter = backend._datacenter()
    pool = datacenter.hostFolder.childEntity[0].resourcePool
    controller = vim.vm.device.VirtualDeviceSpec(
        operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
        device=vim.vm.device.ParaVirtualSCSIController(key=-1, busNumber=0, sharedBus="noSharing"))
    spec = vim.vm.ConfigSpec(name=name, guestId="otherGuest64", numCPUs=1, memoryMB=128, uuid=uuid,
                             files=vim.vm.FileInfo(vmPathName=f"[{backend.datastores()[0].name}]"),
                             deviceChange=[controller])
    return backend.wait(datacenter.vmFolder.CreateVM_Task(config=spec, pool=pool))


def scsi_layout(vm_object):
    """PVSCSI bus -> sorted units of its disks."""
    from pyVmomi import vim

    devices = vm_object.config.hardware.device
    return {c.busNumber: sorted(d.unitNumber for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
                                and d.controllerKey == c.key)
            for c in devices if isinstance(c, vim.vm.device.ParaVirtualSCSIController)}


def test_sixteen_attaches_fill_a_controller_and_the_61st_is_refused(vsphere_home, admin):
    """Through a real vmdk-opsd: units 0-6 and 8-15 of controller 0 first,
    the 16th volume on a new controller, 60 on four, the 61st refused."""
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    backend = get_backend()
    vm_object = make_vm(backend, "docker-host-16")
    executor = Executor(vsphere_home).start()
    names = [f"a{i:02d}" for i in range(61)]
    try:
        for name in names:
            executor.ok("docker-host-16", "create", name, {"size": "1mb"})
        units = [executor.ok("docker-host-16", "attach", name)["Unit"] for name in names[:16]]
        assert units == [str(u) for u in (0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 0)]
        assert scsi_layout(vm_object) == {0: [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15], 1: [0]}
        for name in names[16:60]:
            executor.ok("docker-host-16", "attach", name)
        assert scsi_layout(vm_object) == {bus: [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]
                                          for bus in range(4)}
        assert executor.err("docker-host-16", "attach", names[60]) == (
            "Failed to place new disk - The maximum number of supported volumes has been reached.")
        assert executor.ok("docker-host-16", "get", names[60])["status"] == "detached"
        for name in names[:60]:
            executor.ok("docker-host-16", "detach", name)
        assert all(not units for units in scsi_layout(vm_object).values())
        for name in names:
            executor.ok("docker-host-16", "remove", name)
    finally:
        executor.stop()
        backend.wait(vm_object.Destroy_Task())


def test_a_vm_that_powers_off_gives_its_volumes_back(vsphere_home, admin):
    """The executor watches power states: when a VM powers off, its volumes are
    detached, their side-cars say so (unless one names another VM: the guarded
    write) and the index follows; another VM can then attach them. A VM that
    powered off while no executor ran gives them back when one starts."""
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    backend = get_backend()
    vm_object = make_vm(backend, "docker-host-off")
    backend.wait(vm_object.PowerOnVM_Task())
    other = next(v for v in sorted(backend.vms(), key=lambda v: v.name) if v.name != "docker-host-off")
    executor = Executor(vsphere_home).start()
    try:
        for name in ("off1", "off2"):
            executor.ok("docker-host-off", "create", name, {"size": "1mb"})
            executor.ok("docker-host-off", "attach", name)
        # A side-car that names another VM is not the watch's to change.
        descriptor = next(d for d in backend.attached_disks(backend.find_vm("docker-host-off"))
                          if d.endswith("/off2.vmdk"))
        meta = backend.read_metadata(descriptor)
        backend.write_metadata(descriptor, dict(meta, attachedVMUuid=other.uuid, attachedVMName=other.name))
        backend.wait(vm_object.PowerOffVM_Task())
        deadline = time.monotonic() + 20
        while scsi_layout(vm_object)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scsi_layout(vm_object) == {0: []}
        deadline = time.monotonic() + 10
        while executor.ok(other.name, "get", "off1")["status"] != "detached" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert executor.ok(other.name, "get", "off1")["status"] == "detached"
        assert executor.ok(other.name, "get", "off2")["attached to VM"] == other.name
        rows = parse_table(admin.ok("volume ls -c volume,attached-to"))
        assert [(r["Volume"], r["Attached-to"]) for r in rows] == [("off1", "detached"), ("off2", "detached")]
        assert executor.ok(other.name, "attach", "off1")["Unit"]
        executor.ok(other.name, "detach", "off1")
        log = (vsphere_home / "log" / "vmdk_ops.log").read_text()
        assert f"VM docker-host-off powered off: detached {descriptor}" in log
        backend.write_metadata(descriptor, dict(meta, status="detached", attachedVMUuid=None))
        # Powered off while no service watched: given back when the service starts.
        backend.wait(vm_object.PowerOnVM_Task())
        executor.ok("docker-host-off", "attach", "off1")
        executor.stop()
        backend.wait(vm_object.PowerOffVM_Task())
        executor.start()
        deadline = time.monotonic() + 20
        while scsi_layout(vm_object)[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scsi_layout(vm_object) == {0: []}
        assert executor.ok(other.name, "get", "off1")["status"] == "detached"
        for name in ("off1", "off2"):
            executor.ok(other.name, "remove", name)
    finally:
        executor.stop()
        backend.wait(vm_object.Destroy_Task())


GOLD = '(("hostFailuresToTolerate" i1) ("forceProvisioning" i1))'


def vcenter_rules(name):
    """{capability: value} of a vCenter storage policy, read from SPBM."""
    from vmdkops_admin.backends import get_backend

    profile = get_backend().spbm.profiles().get(name)
    if profile is None:
        return None
    return {prop.id: prop.value for sub in getattr(profile.constraints, "subProfiles", None) or []
            for cap in sub.capability
            for constraint in cap.constraint for prop in constraint.propertyInstance}


def test_storage_policies_on_vcenter_are_spbm_profiles(vcenter_home, admin):
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    rows = {r["Policy Name"]: r for r in parse_table(admin.ok("policy ls"))}
    builtin = rows["vSAN Default Storage Policy"]
    assert (builtin["Kind"], builtin["Active"]) == ("SPBM (vCenter's)", "Unused")
    assert '("hostFailuresToTolerate" i1)' in builtin["Policy Content"]

    assert admin.err("policy", "create", "--name", "bad", "--content", '(("x" i1)') == \
        "Error: Invalid policy string"
    assert admin.err("policy", "create", "--name", "bad", "--content", '(("x" iy))') == \
        "Error: Invalid policy string: x needs an integer"
    assert vcenter_rules("bad") is None and "bad" not in admin.ok("policy ls")
    assert admin.ok("policy", "create", "--name", "gold", "--content", GOLD) == \
        "Successfully created policy: gold\n"
    assert vcenter_rules("gold") == {"hostFailuresToTolerate": 1, "forceProvisioning": 1}

    vm = sorted(get_backend().vms(), key=lambda v: v.name)[0]
    executor = Executor(vcenter_home).start()
    try:
        executor.ok(vm.name, "create", "pv", {"size": "10mb", "vsan-policy-name": "gold"})
        executor.ok(vm.name, "create", "dv", {"size": "10mb", "vsan-policy-name": "vSAN Default Storage Policy"})
        assert executor.err(vm.name, "create", "nv", {"vsan-policy-name": "tin"}) == \
            "Policy tin does not exist. Available policies are: ['gold']"
        assert executor.ok(vm.name, "get", "pv")["vsan-policy-name"] == "gold"
        rows = {r["Policy Name"]: r for r in parse_table(admin.ok("policy ls"))}
        assert (rows["gold"]["Kind"], rows["gold"]["Active"], rows["gold"]["Applies To"]) == (
            "SPBM", "In use by 1 volumes", f"vCenter {json.loads((vcenter_home / 'vsphere.json').read_text())['host']}")
        assert rows["vSAN Default Storage Policy"]["Active"] == "In use by 1 volumes"
        assert parse_table(admin.ok("volume ls -c volume,policy")) == [
            {"Volume": "dv", "Policy": "vSAN Default Storage Policy"}, {"Volume": "pv", "Policy": "gold"}]
        executor.ok(vm.name, "attach", "pv")  # the disk gets the profile's current rules
        silver = '(("hostFailuresToTolerate" i0) ("stripeWidth" i2))'
        assert admin.ok("policy", "update", "--name", "gold", "--content", silver) == \
            "Successfully updated policy gold\nApplied to 1 volumes.\n"
        assert vcenter_rules("gold") == {"hostFailuresToTolerate": 0, "stripeWidth": 2}
        assert admin.err("policy rm --name=gold") == f"Cannot remove. Policy is in use by pv@{vm.datastore}"
        executor.ok(vm.name, "detach", "pv")
        for name in ("pv", "dv"):
            executor.ok(vm.name, "remove", name)
    finally:
        executor.stop()
    assert admin.ok("policy rm --name=gold") == "Successfully removed policy: gold\n"
    assert vcenter_rules("gold") is None
    # A vCenter profile that vmdkops_admin did not make is neither changed nor removed,
    # even when the auth DB has a policy of that name (brought by an import).
    import sqlite3

    with sqlite3.connect(vcenter_home / "auth-db") as db:
        db.execute("INSERT INTO policies (name, content) VALUES ('VVol No Requirements Policy', '((\"a\" i1))')")
    theirs = vcenter_rules("VVol No Requirements Policy")
    message = ("Error: The storage policy VVol No Requirements Policy in vCenter was not made by "
               "vmdkops_admin; change it in vCenter")
    assert admin.err("policy", "update", "--name", "VVol No Requirements Policy", "--content", GOLD) == message
    assert admin.err("policy", "rm", "--name", "VVol No Requirements Policy") == message
    assert vcenter_rules("VVol No Requirements Policy") == theirs
    assert "VVol No Requirements Policy" in admin.ok("policy ls")


def test_storage_policies_on_a_standalone_host_are_vsan_text(esx_home, admin):
    assert admin.err("policy", "create", "--name", "bad", "--content", "fast please") == \
        "Error: Invalid policy string"
    admin.ok("policy", "create", "--name", "gold", "--content", GOLD)
    assert parse_table(admin.ok("policy ls")) == [{
        "Policy Name": "gold", "Policy Content": GOLD, "Active": "Unused", "Kind": "vSAN",
        "Applies To": "no vSAN datastore"}]
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    vm = get_backend().vms()[0]
    executor = Executor(esx_home).start()
    try:
        assert executor.err(vm.name, "create", "pv", {"vsan-policy-name": "gold"}) == \
            "Cannot use a VSAN policy on a non-VSAN datastore"
    finally:
        executor.stop()
    admin.ok("policy rm --name=gold")


def test_a_lost_session_is_made_again(vcsim_backend):
    """An administrator ends the session (or it expires): the next call logs in
    again, and the datastore file interface does too."""
    for mode in ("vpx", "esx"):
        backend = vcsim_backend(mode)
        [store] = backend.datastores()[:1]
        before = backend.content.sessionManager.currentSession.key
        backend.content.sessionManager.Logout()
        assert [ds.name for ds in backend.datastores()][0] == store.name
        assert backend.content.sessionManager.currentSession.key != before
        backend.content.sessionManager.Logout()
        assert backend.read_metadata(f"[{store.name}] dockvols/none/nothing.vmdk") is None
        assert backend.content.sessionManager.currentSession is not None


def test_tls_is_verified_unless_told_otherwise(vcsim_servers, vcsim_binary):
    """The simulator's self-signed certificate is refused by default, accepted
    with it as the CA file, and with the explicit insecure flag."""
    from rig import vcsim
    from vmdkops_admin.backends.vsphere import VsphereBackend, VsphereError

    url = vcsim_servers("vpx")
    settings = {"host": url.hostname, "port": url.port, "user": "user", "password": "pass"}
    with pytest.raises(VsphereError, match=f"Cannot reach vSphere at {url.hostname}: .*CERTIFICATE_VERIFY_FAILED"):
        VsphereBackend(dict(settings)).datastores()
    assert VsphereBackend(dict(settings, ca_file=vcsim.ca_file(vcsim_binary, "vpx"))).datastores()
    assert VsphereBackend(dict(settings, insecure=True)).datastores()


def test_the_password_is_never_logged_nor_on_a_command_line(vsphere_home, admin):
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    password_file = json.loads((vsphere_home / "vsphere.json").read_text())["password_file"]
    with open(password_file, "w") as f:
        f.write("Zebra-7-secret\n")
    vm = get_backend().vms()[0]
    from vmdkops_admin.executor.main import DEFAULT_LOG_CONFIG

    config = json.loads(json.dumps(DEFAULT_LOG_CONFIG))  # everything, at DEBUG
    config["handlers"]["rotate_file"]["filename"] = str(vsphere_home / "log" / "vmdk_ops.log")
    config["root"]["level"] = "DEBUG"
    (vsphere_home / "log_config.json").write_text(json.dumps(config))
    executor = Executor(vsphere_home).start()
    try:
        executor.ok(vm.name, "create", "pw", {"size": "1mb"})
        executor.ok(vm.name, "remove", "pw")
        with open(f"/proc/{executor.process.pid}/cmdline", "rb") as f:
            assert b"Zebra" not in f.read()
    finally:
        executor.stop()
    admin.ok("status")
    logs = [p.read_text() for p in (vsphere_home / "log").iterdir()]
    assert logs and not any("Zebra" in text for text in logs)


def test_vms_by_bios_uuid_instance_uuid_or_name_and_clones_refused(vcsim_backend):
    from vmdkops_admin.backends.vsphere import VsphereError

    for mode in ("vpx", "esx"):
        backend = vcsim_backend(mode)
        vm = sorted(backend.vms(), key=lambda v: v.name)[0]
        vm_object = backend._vm_object(vm)
        assert backend.find_vm(vm_object.config.instanceUuid.upper()) == vm
        assert backend.find_vm(vm.name) == vm == backend.find_vm(vm.uuid)
        clone = make_vm(backend, "cloned-host", uuid=vm.uuid)
        try:
            assert clone.config.uuid.lower() == vm.uuid
            with pytest.raises(VsphereError, match=(
                    f"VMs .*{vm.name}.* have the same BIOS uuid {vm.uuid} \\(cloned VMs\\?\\); "
                    "give each its own uuid before it uses volumes")):
                backend.find_vm(vm.uuid)
        finally:
            backend.wait(clone.Destroy_Task())
        assert backend.find_vm(vm.uuid) == vm


def test_reconfigures_of_one_vm_run_one_at_a_time(vcsim_backend):
    """Eight threads attach eight disks to one VM at once through one backend:
    each gets its own unit (placement and reconfigure under the VM's lock)."""
    import threading

    backend = vcsim_backend("vpx")
    vm_object = make_vm(backend, "docker-host-threads")
    vm = backend.find_vm("docker-host-threads")
    group = "44444444-5555-6666-7777-888888888888"
    datastore = backend.datastores()[0]
    backend.vmgroup_dir(datastore, group, "threads", create=True)
    disks = [backend.descriptor(datastore, group, f"t{i}") for i in range(8)]
    for descriptor in disks:
        backend.create_disk(descriptor, 1, "thin")
        backend.write_metadata(descriptor, {"status": "detached", "volOpts": {}})
    replies, errors = {}, []

    def attach(descriptor):
        try:
            replies[descriptor] = backend.attach(vm, descriptor)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    try:
        threads = [threading.Thread(target=attach, args=(d,)) for d in disks]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == []
        assert sorted(int(r["Unit"]) for r in replies.values()) == [0, 1, 2, 3, 4, 5, 6, 8]
        assert scsi_layout(vm_object) == {0: [0, 1, 2, 3, 4, 5, 6, 8]}
        for descriptor in disks:
            backend.detach(vm, descriptor)
    finally:
        for descriptor in disks:
            backend.delete_disk(descriptor)
        backend.wait(vm_object.Destroy_Task())


def set_heartbeat(home, vm_object, status):
    """The guest heartbeat VMware Tools would report for a VM of the simulator."""
    import ssl
    import urllib.request

    settings = json.loads((home / "vsphere.json").read_text())
    query = urllib.parse.urlencode({"uuid": vm_object.config.uuid, "status": status})
    request = urllib.request.Request(f"https://{settings['host']}:{settings['port']}/vcsim/heartbeat?{query}",
                                     method="POST")
    with urllib.request.urlopen(request, context=ssl._create_unverified_context(), timeout=10):
        pass


def test_a_silent_vms_disk_is_hot_removed_before_another_takes_it(vsphere_home, admin):
    """Takeover on vSphere: refused while the holder's guest still runs
    (its heartbeat green), however long its plugin is silent; once the
    guest is gone the disk is removed from the holder, then added to the
    VM asking."""
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend

    backend = get_backend()
    holder, taker = make_vm(backend, "docker-host-a"), make_vm(backend, "docker-host-b")
    for vm_object in (holder, taker):
        backend.wait(vm_object.PowerOnVM_Task())
    admin.ok("vmgroup update --name=_DEFAULT --takeover-after=1s")
    executor = Executor(vsphere_home).start("--backend", "vsphere")
    try:
        executor.ok("docker-host-a", "create", "db", {"size": "1mb"})
        executor.ok("docker-host-a", "attach", "db")
        executor.ok("docker-host-a", "report")
        set_heartbeat(vsphere_home, holder, "green")
        time.sleep(1.5)
        error = executor.err("docker-host-b", "attach", "db")
        assert error.startswith("Failed to attach volume db@") and (
            "cannot be cut off: its guest still runs (VMware Tools' heartbeat of VM docker-host-a is green); "
            "nothing was changed") in error
        assert scsi_layout(holder) == {0: [0]} and scsi_layout(taker) == {0: []}
        set_heartbeat(vsphere_home, holder, "red")
        executor.ok("docker-host-b", "attach", "db")
        assert scsi_layout(holder) == {0: []} and scsi_layout(taker) == {0: [0]}
        assert executor.ok("docker-host-b", "get", "db")["attached to VM"] == "docker-host-b"
        events = [e for e in json.loads(admin.ok("report audit --output-format=json")) if e["action"] == "takeover"]
        assert [e["vm"] for e in events] == ["docker-host-b"]
        assert events[0]["detail"].startswith("volume db@") and "from VM docker-host-a, silent " in events[0]["detail"]
        executor.ok("docker-host-b", "detach", "db")
        executor.ok("docker-host-b", "remove", "db")
    finally:
        executor.stop()
        for vm_object in (holder, taker):
            backend.wait(vm_object.PowerOffVM_Task())
            backend.wait(vm_object.Destroy_Task())
