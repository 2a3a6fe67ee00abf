"""Many hosts on one PostgreSQL auth DB: two installations (two state roots,
as two ESX hosts) share the database and a datastore directory registered
under the same name, with VMs of one vmgroup on both, each host serving its
own VMs through its own vmdk-opsd."""

import concurrent.futures
import contextlib
import os
import threading
import time

import pytest

from conftest import parse_table

from rig import VM1_UUID, VM2_UUID


@contextlib.contextmanager
def on(home):
    """Run what follows as the installation whose state root is ``home``."""
    before = os.environ.get("VMDKOPS_HOME")
    os.environ["VMDKOPS_HOME"] = str(home)
    try:
        yield
    finally:
        os.environ["VMDKOPS_HOME"] = before


class Host:
    def __init__(self, home, admin, executor):
        self.home, self._admin, self.executor = home, admin, executor

    def admin(self, command):
        with on(self.home):
            return self._admin.ok(command)


@pytest.fixture
def hosts(tmp_path, pg_url, admin, home):
    from rig.executor import Executor, release_loops, require_root_and_loops
    from vmdkops_admin.backends.local import LocalBackend
    from vmdkops_admin.paths import layout

    require_root_and_loops()
    shared = tmp_path / "shared-datastore"
    shared.mkdir()
    made = []
    for n, (vm, vm_uuid) in enumerate((("VM1", VM1_UUID), ("VM2", VM2_UUID)), 1):
        root = tmp_path / f"esx{n}"
        root.mkdir()
        with on(root):
            backend = LocalBackend(layout())
            backend.add_datastore("DS1", str(shared))
            backend.add_vm(vm, vm_uuid, "DS1")
        made.append(Host(root, admin, Executor(root)))
    first, second = made
    assert first.admin(f"config init --db-url {pg_url}").startswith("Creating new DB at ")
    first.admin("vmgroup create --name=shared --default-datastore=DS1 --vm-list=VM1")
    # The second host joins the database as it is: nothing is made again.
    assert second.admin(f"config init --db-url {pg_url}") == \
        f"Using shared database {pg_url}\n"
    second.admin("vmgroup vm add --name=shared --vm-list=VM2")
    second.admin("vmgroup access set --name=shared --datastore=DS1 --volume-totalsize=300MB")
    for host, vm in zip(made, ("VM1", "VM2")):
        with on(host.home):
            host.executor.start()
            host.executor.token(vm)
    yield made
    for host in made:
        host.executor.stop()
        release_loops(host.home)


def test_the_second_host_sees_the_first_hosts_vmgroups(hosts):
    first, second = hosts
    rows = parse_table(second.admin("vmgroup vm ls --name=shared"))
    assert sorted(r["Name"] for r in rows) == ["VM1", "VM2"]
    assert parse_table(first.admin("vmgroup access ls --name=shared"))[0]["Total_size"] == "300.00MB"


def test_a_quota_holds_across_hosts(hosts):
    """20 concurrent 100 MB creates split across the two executors against a
    300 MB quota: exactly 3 succeed, and both hosts list the same three."""
    first, second = hosts
    start = threading.Barrier(20)

    def create(i):
        host, vm = (first, "VM1") if i % 2 else (second, "VM2")
        start.wait()
        return host.executor.call(vm, "create", f"v{i}", {"size": "100mb"})

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(create, range(20)))
    made = sorted(f"v{i}@DS1" for i, reply in enumerate(replies) if reply is None)
    assert len(made) == 3, replies
    assert all(reply["Error"] == "The total volume size exceeds the usage quota"
               for reply in replies if reply is not None)
    for host in hosts:
        assert sorted(f"{r['Volume']}@{r['Datastore']}" for r in parse_table(
            host.admin("volume ls -c volume,datastore"))) == made
    assert sorted(e["Name"] for e in first.executor.ok("VM1", "list")) == made
    assert sorted(e["Name"] for e in second.executor.ok("VM2", "list")) == made
    assert [r["Used"] for r in parse_table(first.admin("report usage --vmgroup=shared"))] == ["100.0%"]


def test_one_volume_attaches_to_one_vm_of_either_host(hosts):
    """Both hosts attach the same volume at once: exactly one wins, the other
    is told which VM has it; a reconcile on the other host leaves it alone."""
    first, second = hosts
    first.executor.ok("VM1", "create", "both")
    for _ in range(5):
        start = threading.Barrier(2)

        def attach(host, vm):
            start.wait()
            return host.executor.call(vm, "attach", "both@DS1")

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(attach, hosts, ("VM1", "VM2")))
        winners = [vm for vm, reply in zip(("VM1", "VM2"), replies) if "Error" not in reply]
        assert len(winners) == 1, replies
        loser = [reply for reply in replies if "Error" in reply][0]
        assert loser["Error"].startswith(
            f"Failed to attach volume both@DS1: it is attached to VM {winners[0]}, whose plugin has never reported")
        for host in hosts:
            assert host.admin("volume reconcile --dry-run") == \
                "Index, metadata, disks and attachments agree.\n"
            assert parse_table(host.admin("volume ls -c volume,attached-to")) == [
                {"Volume": "both", "Attached-to": winners[0]}]
        winner = first if winners[0] == "VM1" else second
        winner.executor.ok(winners[0], "detach", "both@DS1")
    # A silent VM of the other host: its device is not this host's to check.
    first.admin("vmgroup update --name=shared --takeover-after=1s")
    first.executor.ok("VM1", "attach", "both@DS1")
    first.executor.ok("VM1", "report")
    time.sleep(1.5)
    assert "but it cannot be cut off: VM VM1 has it on another host; nothing was changed" in \
        second.executor.err("VM2", "attach", "both@DS1")
    assert parse_table(second.admin("volume ls -c volume,attached-to")) == [{"Volume": "both", "Attached-to": "VM1"}]
    first.executor.ok("VM1", "detach", "both@DS1")
    first.executor.ok("VM1", "remove", "both")
    assert second.executor.ok("VM2", "list") == []
