"""Fault injection: the executor is killed (SIGKILL) at each step of create,
clone, remove, attach and detach. After a restart (which reconciles), the
index, side-cars, disk files, loop devices and quota usage agree, nothing is
half-made, no volume is lost, and the operation can be retried."""

import glob
import json
import os
import signal
import time

import pytest
from sqlalchemy import func, select

from conftest import parse_table

pytestmark = pytest.mark.usefixtures("configured")


def index_rows():
    from sqlalchemy.orm import Session

    from vmdkops_admin.db import modes
    from vmdkops_admin.db.models import Volume

    engine = modes.connect(modes.detect())
    with Session(engine) as session:
        rows = {(r.name, r.state, r.attached_vm_uuid) for r in session.scalars(select(Volume))}
        used = session.scalar(select(func.coalesce(func.sum(Volume.size_mb), 0)))
    engine.dispose()
    return rows, used


def assert_consistent(admin, inventory, home):
    """Everything agrees: reconcile has nothing left to do, every index row is
    a complete volume, every disk is indexed, the loop devices are the recorded ones."""
    from vmdkops_admin.backends.local import loop_backing_file

    assert admin.ok("volume reconcile --dry-run") == "Index, metadata, disks and attachments agree.\n"
    rows, used = index_rows()
    disks = {}
    for ds in inventory.datastores():
        for _, volume, descriptor in inventory.volume_files(ds):
            meta = inventory.read_metadata(descriptor)
            assert meta is not None, f"{volume} has no metadata"
            disks[volume] = inventory.disk_info(descriptor)[0] // (1024 * 1024)
    assert {name for name, _, _ in rows} == set(disks)
    assert all(state == "ready" for _, state, _ in rows)
    assert used == sum(disks.values())
    attached = {name for name, _, vm in rows if vm}
    assert volume_files(inventory) == {f"{volume}{suffix}" for volume in disks
                                       for suffix in (".vmdk", "-flat.vmdk", ".vmfd")} | {
        f"{volume}.lck" for volume in attached}
    state = json.loads((home / "attachments.json").read_text()) if (home / "attachments.json").exists() else {}
    for disks_of_vm in state.values():
        for disk in disks_of_vm:
            assert loop_backing_file(disk["device"]) == disk["extent"]
    assert inventory.stray_devices() == []


def volume_files(inventory):
    """The names of the files in the datastores' vmgroup folders."""
    names = set()
    for ds in inventory.datastores():
        for folder in glob.glob(os.path.join(ds.path, "dockvols", "*-*-*-*-*")):
            names.update(os.listdir(folder))
    return names


def crash(executor, step, *request):
    """Run a request on an executor that dies at ``step``; then restart it."""
    executor.stop()
    executor.start(crash_at=step)
    with pytest.raises(Exception):
        executor.call("VM1", *request)
    executor.process.wait(timeout=30)
    assert executor.process.returncode == -9
    executor.start()


@pytest.mark.parametrize("step", ["create:reserved", "create:disk", "create:metadata", "create:ready"])
@pytest.mark.parametrize("clone", [False, True], ids=["create", "clone"])
def test_create_and_clone(executor, admin, inventory, home, step, clone):
    admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=300MB")
    executor.ok("VM1", "create", "src", {"size": "100mb"})
    opts = {"clone-from": "src"} if clone else {"size": "100mb"}
    crash(executor, step, "create", "v", opts)
    assert_consistent(admin, inventory, home)
    executor.ok("VM1", "create", "v", opts)  # the retry succeeds (or finds it made)
    assert executor.err("VM1", "create", "w", {"size": "200mb"}) == \
        "The total volume size exceeds the usage quota"
    assert_consistent(admin, inventory, home)


@pytest.mark.parametrize("diskformat", ["thin", "zeroedthick", "eagerzeroedthick"])
@pytest.mark.parametrize("step", ["disk:writing", "disk:extent", "disk:descriptor"])
@pytest.mark.parametrize("clone", [False, True], ids=["create", "clone"])
def test_killed_inside_the_disk_write(executor, admin, inventory, home, step, clone, diskformat):
    """Inside the extent's write (or a clone's copy), after the extent, after
    the temporary descriptor: the restart removes what the create left, and
    the client's retry makes the volume."""
    admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=300MB")
    executor.ok("VM1", "create", "src", {"size": "100mb"})
    source = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols",
                          "11111111-1111-1111-1111-111111111111", "src-flat.vmdk")
    with open(source, "r+b") as f:  # data for the clone to copy
        f.write(b"x" * (3 << 20))
    opts = {"clone-from": "src", "diskformat": diskformat} if clone else \
        {"size": "100mb", "diskformat": diskformat}
    crash(executor, step, "create", "v", opts)
    assert_consistent(admin, inventory, home)
    executor.ok("VM1", "create", "v", opts)
    assert executor.ok("VM1", "get", "v")["diskformat"] == diskformat
    assert_consistent(admin, inventory, home)


def test_a_create_killed_while_writing_is_undone_and_can_be_retried(executor, admin, inventory, home):
    """The issue's reproduction: an eagerzeroedthick create killed while its
    extent is being written, then started again."""
    folder = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols",
                          "11111111-1111-1111-1111-111111111111")
    opts = {"size": "1gb", "diskformat": "eagerzeroedthick"}
    import threading

    answered = []

    def create():
        try:
            answered.append(executor.call("VM1", "create", "big", opts))
        except Exception as exc:  # noqa: BLE001 - the connection dies with the executor
            answered.append(exc)

    creating = threading.Thread(target=create)
    creating.start()
    deadline = time.monotonic() + 30
    while not any(name.startswith("big-flat.vmdk") and os.path.getsize(os.path.join(folder, name))
                  for name in (os.listdir(folder) if os.path.isdir(folder) else [])):
        assert time.monotonic() < deadline, "the extent was never written"
        time.sleep(0.01)
    executor.process.send_signal(signal.SIGKILL)
    creating.join(timeout=30)
    executor.process.wait(timeout=30)
    assert len(answered) == 1 and isinstance(answered[0], Exception)  # never answered
    findings = json.loads(admin.ok("volume reconcile --dry-run --output-format=json"))
    assert {(f["volume"], f["action"]) for f in findings} == {
        ("big@DS1", "would removed"), ("big@DS1", "would removed from the index")}
    assert any(f["problem"].startswith("big-flat.vmdk") and "interrupted" in f["problem"]
               for f in findings)
    executor.start()
    assert_consistent(admin, inventory, home)
    assert executor.ok("VM1", "list") == []
    executor.ok("VM1", "create", "big", opts)
    assert executor.ok("VM1", "list") == [{"Name": "big@DS1", "Attributes": {}}]
    assert_consistent(admin, inventory, home)


@pytest.mark.parametrize("step", ["remove:marked", "remove:deleted", "remove:unindexed"])
def test_remove(executor, admin, inventory, home, step):
    executor.ok("VM1", "create", "v")
    crash(executor, step, "remove", "v")
    assert_consistent(admin, inventory, home)
    executor.ok("VM1", "remove", "v")
    assert executor.ok("VM1", "list") == []
    assert_consistent(admin, inventory, home)


@pytest.mark.parametrize("step", ["attach:losetup", "attach:claim", "attach:device", "attach:metadata",
                                  "attach:indexed"])
def test_attach(executor, admin, inventory, home, step):
    executor.ok("VM1", "create", "v")
    crash(executor, step, "attach", "v")
    assert_consistent(admin, inventory, home)
    assert executor.ok("VM1", "attach", "v")["Unit"] == "0"
    assert parse_table(admin.ok("volume ls -c volume,attached-to")) == [
        {"Volume": "v", "Attached-to": "VM1"}]
    executor.ok("VM1", "detach", "v")
    assert_consistent(admin, inventory, home)


@pytest.mark.parametrize("step", ["detach:device", "detach:metadata", "detach:indexed"])
def test_detach(executor, admin, inventory, home, step):
    executor.ok("VM1", "create", "v")
    executor.ok("VM1", "attach", "v")
    crash(executor, step, "detach", "v")
    assert_consistent(admin, inventory, home)
    executor.ok("VM1", "detach", "v")
    assert executor.ok("VM1", "get", "v")["status"] == "detached"
    executor.ok("VM1", "remove", "v")
    assert_consistent(admin, inventory, home)


@pytest.mark.parametrize("step, diskformat", [
    ("resize:reserved", "thin"), ("resize:writing", "eagerzeroedthick"), ("resize:extent", "zeroedthick"),
    ("resize:descriptor", "thin"), ("resize:metadata", "eagerzeroedthick"), ("resize:done", "thin")])
def test_resize(executor, admin, inventory, home, step, diskformat):
    """``volume resize`` killed at each step: the executor's start settles the
    volume at the old size or the new one, in the index, the side-car and
    the disk alike; the resize again then ends at the new size."""
    executor.ok("VM1", "create", "v", {"size": "100mb", "diskformat": diskformat})
    killed = admin.proc("volume", "resize", "--volume=v@DS1", "--size=200MB",
                        env=dict(os.environ, VMDKOPS_CRASH_AT=step))
    assert killed.returncode == -9, (killed.stdout, killed.stderr)
    executor.stop()
    executor.start()
    assert_consistent(admin, inventory, home)
    [(_, descriptor)] = [(v, d) for ds in inventory.datastores() for _, v, d in inventory.volume_files(ds)]
    size_mb = inventory.disk_info(descriptor)[0] >> 20
    assert size_mb in (100, 200) and inventory.read_metadata(descriptor).get("capacityMB", 100) == size_mb
    if size_mb == 100:
        admin.ok("volume resize --volume=v@DS1 --size=200MB")
    assert executor.ok("VM1", "get", "v")["capacity"]["size"] == "200MB"
    assert_consistent(admin, inventory, home)


def test_an_attach_during_a_resize_is_refused(executor, admin, inventory, home):
    executor.ok("VM1", "create", "v", {"size": "100mb"})
    killed = admin.proc("volume", "resize", "--volume=v@DS1", "--size=200MB",
                        env=dict(os.environ, VMDKOPS_CRASH_AT="resize:reserved"))
    assert killed.returncode == -9
    assert executor.err("VM1", "attach", "v") == "Failed to attach volume v@DS1: it is being resized"
    assert parse_table(admin.ok("volume reconcile")) == [
        {"Volume": "v@DS1", "Problem": "resize was interrupted", "Action": "settled at 100 MB"}]
    executor.ok("VM1", "attach", "v")
    executor.ok("VM1", "detach", "v")
    assert_consistent(admin, inventory, home)


def test_reconcile_repairs_and_reports(executor, admin, inventory, home):
    executor.ok("VM1", "create", "kept")
    executor.ok("VM1", "create", "lost")
    executor.ok("VM1", "attach", "kept")
    ds1 = inventory.datastore_by_name("DS1")
    folder = os.path.join(ds1.path, "dockvols", "11111111-1111-1111-1111-111111111111")
    for suffix in (".vmdk", "-flat.vmdk", ".vmfd"):
        os.unlink(os.path.join(folder, "lost" + suffix))
    with open(os.path.join(folder, "bare.vmdk"), "w") as f:
        f.write('RW 2048 FLAT "bare-flat.vmdk" 0\n')
    open(os.path.join(folder, "bare-flat.vmdk"), "w").close()
    executor.stop()
    from rig.executor import release_loops
    release_loops(home)  # a host reboot: the loop devices are gone

    findings = json.loads(admin.ok("volume reconcile --dry-run --output-format=json"))
    assert {(f["volume"], f["action"]) for f in findings} == {
        ("kept@DS1", "would detached"), ("bare@DS1", "reported"),
        ("lost@DS1", "would removed from the index")}
    rows = parse_table(admin.ok("volume reconcile"))
    assert {(r["Volume"], r["Action"]) for r in rows} == {
        ("kept@DS1", "detached"), ("kept@DS1", "set to detached"), ("bare@DS1", "reported"),
        ("lost@DS1", "removed from the index")}
    assert parse_table(admin.ok("volume reconcile")) == [
        {"Volume": "bare@DS1", "Problem": "on disk without metadata (side-car)", "Action": "reported"}]
    executor.start()
    assert executor.ok("VM1", "get", "kept")["status"] == "detached"
    assert executor.ok("VM1", "list") == [{"Name": "kept@DS1", "Attributes": {}}]


def test_lost_index_is_rebuilt_from_side_cars(executor, admin, inventory, home, configured, request):
    executor.ok("VM1", "create", "a", {"size": "50mb", "fstype": "xfs"})
    executor.ok("VM1", "attach", "a")
    if configured == "sqlite":
        admin.ok("config rm --local --no-backup --confirm")
        admin.ok("config init --local")
    else:  # a new, empty shared database
        import uuid

        import psycopg

        server = request.getfixturevalue("pg_server")
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(server + "/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        admin.ok("config rm --unlink --confirm")
        admin.ok("config", "init", "--db-url", f"{server}/{name}")
    assert parse_table(admin.ok("volume reconcile")) == [
        {"Volume": "a@DS1", "Problem": "on disk but not in the index", "Action": "indexed"}]
    assert admin.ok("volume reconcile") == "Index, metadata, disks and attachments agree.\n"
    assert executor.ok("VM1", "list") == [{"Name": "a@DS1", "Attributes": {}}]  # from the index
    rows = parse_table(admin.ok("volume ls -c volume,capacity,fstype,attached-to,created-by"))
    assert rows == [{"Volume": "a", "Capacity": "50MB", "Filesystem": "xfs", "Attached-to": "VM1",
                     "Created By": "VM1"}]
    executor.ok("VM1", "detach", "a")
