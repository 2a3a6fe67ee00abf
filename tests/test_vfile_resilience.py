"""Shared volumes survive what swarms do (the resilience issue): role
changes, a manager down and a lost quorum, a node that dies while mounted,
the file server's node that dies, plugin restarts and orphans; and
services' vsphere volumes (a counter, a volume per slot, a stack) follow
them when their node dies or is cut off (the takeover), and the node that
comes back takes nothing back. On a swarm of three managers and a worker
(node4), each test leaving it as it found it."""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from plugin.refcount import READY
from plugin.vfile.background import HELPER_INTERVAL
from plugin.vfile.node import LEASE_TTL
from rig import wait
from rig.executor import no_file_has_two_loops
from rig.swarm import etcd_keys, file_servers, plugin_call, start, start_swarm, status, stop_swarm, volumes

DEAD_NODE_GRACE = 25  # shorter than the default (60 s), longer than a cut-off below
SWARM_DOWN = 20  # seconds swarm takes to report a node that died down (13-15 s seen)
TAKEOVER_AFTER = 15  # a silent VM's volumes are taken over after it (the default, 30 s, in bench/failover.py)


@pytest.fixture(scope="module")
def swarm4(tmp_path_factory, samba_image, busybox_dir, swarm_parts):
    running = start_swarm(str(tmp_path_factory.mktemp("swarm4")), samba_image, busybox_dir,
                          vms=("VM1", "VM2", "VM3", "VM4"), managers=3, dead_node_grace=DEAD_NODE_GRACE)
    try:
        admin_on(running, "vmgroup", "update", "--name=_DEFAULT", f"--takeover-after={TAKEOVER_AFTER}s")
        yield running
    finally:
        stop_swarm(running)


@pytest.fixture
def made(swarm4):
    """Containers and volumes a test made, removed whatever happened."""
    things = {"volumes": [], "containers": []}
    yield things
    for node, container in things["containers"]:
        if node.dockerd.poll() is None:
            node.docker("rm", "-f", container, check=False)
    manager = next(n for n in swarm4.nodes if n.dockerd.poll() is None)
    for volume in things["volumes"]:
        wait(lambda: manager.docker("volume", "rm", volume, check=False).returncode == 0
             or volume not in volumes(manager), 60, 0.5)


def counter(node, container, path="/data/a"):
    """The number a writer keeps rewriting in ``path``: a read that meets the
    rewrite (truncated, not yet written) is made again."""
    for _ in range(20):
        text = node.docker("exec", container, "cat", path).stdout.strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.1)
    raise AssertionError(f"{path} holds no number: {text!r}")


# Rewrites /data/n with a growing number, saying which writes failed.
WRITER = 'i=0; while true; do i=$((i+1)); if ! (echo $i > /data/n && sync); then echo "failed $i"; fi; sleep 0.2; done'


def written(node, container, path="/data/n"):
    """The writer's last number, or None while its share does not answer."""
    try:
        return counter(node, container, path)
    except AssertionError:
        return None


def timed(call, *args, **kwargs):
    """What ``call`` returned, and the seconds it took."""
    started = time.monotonic()
    return call(*args, **kwargs), time.monotonic() - started


def unique():
    return f"vfr{uuid.uuid4().hex[:8]}"


def node_id(node):
    return node.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip()


def etcd_members(node):
    out = node.etcdctl("member", "list", "-w", "json").stdout
    return sorted(m.get("name", "") for m in json.loads(out).get("members", [])) if out.strip() else []


def managers(swarm):
    """The node IDs of the swarm's managers, as a manager that answers says."""
    for node in swarm.nodes:
        if node.dockerd.poll() is None:
            listed = node.docker("node", "ls", "-f", "role=manager", "--format", "{{.ID}}", check=False)
            if listed.returncode == 0:
                return sorted(listed.stdout.split())
    return None


def admin_on(swarm, *args):
    """The output of vmdkops_admin run on the swarm's executor host."""
    admin = shutil.which("vmdkops_admin", path=os.path.dirname(sys.executable))
    return subprocess.run([admin, *args], capture_output=True, text=True, check=True,
                          env=dict(os.environ, VMDKOPS_HOME=swarm.home)).stdout


def audited_takeovers(swarm, volume):
    """(from VM, by VM) of each takeover of a volume (vol@ds), as ``report audit`` shows them."""
    return [(re.search(r" from VM (\S+), ", e["detail"]).group(1), e["vm"])
            for e in json.loads(admin_on(swarm, "report", "audit", "--output-format=json"))
            if e["action"] == "takeover" and e["target"] == volume]


def server_node(swarm, volume):
    """The node where the volume's file server runs now."""
    return task_node(swarm, f"vFileServer{volume}")


def running_tasks(swarm, service):
    """Slot -> the node where the service's task of that slot runs now."""
    manager = next(n for n in swarm.nodes if n.dockerd.poll() is None)
    ids = manager.docker("service", "ps", "-q", "-f", "desired-state=running", service).stdout.split()
    tasks = [t for t in json.loads(manager.docker("inspect", *ids).stdout) if t["Status"]["State"] == "running"] \
        if ids else []
    nodes = {node_id(n): n for n in swarm.nodes if n.dockerd.poll() is None}
    return {t["Slot"]: nodes.get(t["NodeID"]) for t in tasks}


def task_node(swarm, service):
    """The node where the service's (one) task runs now."""
    return next(iter(running_tasks(swarm, service).values()), None)


def created_at(node, volume):
    """When a volume was made, as ``docker volume inspect`` on a node shows it."""
    return json.loads(node.docker("volume", "inspect", volume).stdout)[0]["CreatedAt"]


def task_container(node, service, slot=1):
    """The ID of the container of the service's task of that slot on a node."""
    return node.docker("ps", "-q", "-f", f"name={service}.{slot}.").stdout.strip()


def test_a_plugin_restart_keeps_the_mounts_and_the_counts(swarm4, made):
    """SIGKILL the vfile plugin of a node where two containers use a volume:
    they go on reading and writing; the restarted plugin counts them again,
    neither unmounting nor counting twice. A manager's restart keeps its etcd member."""
    node, manager = swarm4.nodes[3], swarm4.nodes[0]
    volume = unique()
    made["volumes"].append(volume)
    node.docker("volume", "create", "-d", "vfile", volume)
    first = start(node, volume, "i=0; while true; do i=$((i+1)); echo $i > /data/a; sleep 0.2; done")
    second = start(node, volume)
    made["containers"] += [(node, first), (node, second)]
    members = etcd_members(manager)
    for victim in (node, manager):
        victim.vfile.send_signal(signal.SIGKILL)
        victim.vfile.wait()
    time.sleep(1)
    assert node.docker("exec", second, "cat", "/data/a").returncode == 0  # still served meanwhile
    node.start_vfile()
    manager.start_vfile()
    assert f"Volume name={volume} count=2 mounted=true" in node.vfile_log()
    before = counter(node, second)
    time.sleep(1)
    assert counter(node, second) > before
    assert status(manager, volume)["Global Refcount"] == 1
    assert etcd_members(manager) == members
    node.docker("rm", "-f", first)
    assert status(manager, volume)["Global Refcount"] == 1  # the other container still has it
    node.docker("exec", second, "sh", "-c", "echo still > /data/b")
    node.docker("rm", "-f", second)
    assert status(manager, volume)["Global Refcount"] == 0
    assert wait(lambda: status(manager, volume)["Volume Status"] == "Ready", 30, 0.5)


def test_a_dead_nodes_mounts_stop_counting(swarm4, made):
    """A node that dies while it mounts a volume: its mount keeps counting
    (and its file server running) until swarm has reported the node down for
    the grace period; then, as the last user, the file server stops and the
    base volume is let go. Back after that, it does not count again."""
    victim, manager = swarm4.nodes[3], swarm4.nodes[0]
    volume = unique()
    made["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", volume)
    victim.docker("node", "update", "--availability", "drain", node_id(victim), check=False)
    manager.docker("node", "update", "--availability", "drain", node_id(victim))  # the server runs elsewhere
    try:
        start(victim, volume)
        assert status(manager, volume)["Clients"] == [victim.address]
        victim.kill()
        died = time.monotonic()
        assert wait(lambda: "unreachable since" in status(manager, volume)["Clients"][0],
                    LEASE_TTL + HELPER_INTERVAL + 5, 0.5)
        assert status(manager, volume)["Global Refcount"] == 1
        assert f"vFileServer{volume}" in file_servers(swarm4)
        assert wait(lambda: status(manager, volume)["Global Refcount"] == 0,
                    SWARM_DOWN + DEAD_NODE_GRACE + HELPER_INTERVAL + 10, 0.5)
        assert time.monotonic() - died >= DEAD_NODE_GRACE
        assert status(manager, volume)["Clients"] is None
        assert wait(lambda: f"vFileServer{volume}" not in file_servers(swarm4)
                    and status(manager, volume)["Volume Status"] == "Ready", HELPER_INTERVAL + 30, 0.5)
        assert wait(lambda: swarm4.executor.ok("VM1", "get", f"_vF_{volume}")["status"] == "detached", 30, 0.5)
        victim.revive()
        assert status(victim, volume)["Global Refcount"] == 0
        assert victim.share_mounts() == []
    finally:
        if victim.dockerd.poll() is not None:
            victim.revive()
        manager.docker("node", "update", "--availability", "active", node_id(victim))


def test_a_node_cut_off_keeps_its_mounts(swarm4, made):
    """A worker cut off from the others for longer than its lease while its
    container writes: its mount keeps counting, its file server runs, a
    remove elsewhere is refused naming it; when its link is back its mount
    works again, counted once."""
    cut, manager = swarm4.nodes[3], swarm4.nodes[0]
    volume = unique()
    made["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", volume)
    manager.docker("node", "update", "--availability", "drain", node_id(cut))  # the server runs elsewhere
    try:
        writer = start(cut, volume, 'i=0; while true; do i=$((i+1)); echo $i > /data/n && sync; sleep 0.2; done')
        made["containers"].append((cut, writer))
        assert wait(lambda: status(manager, volume)["Clients"] == [cut.address], 10, 0.5)
        cut.cut()
        try:
            assert wait(lambda: "unreachable since" in status(manager, volume)["Clients"][0],
                        LEASE_TTL + HELPER_INTERVAL + 5, 0.5)
            assert status(manager, volume)["Global Refcount"] == 1
            assert f"vFileServer{volume}" in file_servers(swarm4)
            refused = manager.docker("volume", "rm", volume, check=False)
            assert refused.returncode != 0 and \
                f"is mounted on node(s) {cut.address} (unreachable since" in refused.stderr, refused.stderr
        finally:
            cut.cut(False)
        before = counter(cut, writer, "/data/n")
        assert wait(lambda: counter(cut, writer, "/data/n") > before + 3, 60, 0.5)
        assert wait(lambda: status(manager, volume)["Clients"] == [cut.address], HELPER_INTERVAL + 5, 0.5)
        assert status(manager, volume)["Global Refcount"] == 1
        cut.docker("rm", "-f", writer)
        assert wait(lambda: status(manager, volume)["Volume Status"] == "Ready", 30, 0.5)
    finally:
        manager.docker("node", "update", "--availability", "active", node_id(cut))


def test_the_file_servers_node_dies(swarm4, made):
    """Kill the node running the file server while two others mount the
    volume and one writes, and let no one act: the rescheduled server takes
    its base volume over from the dead node (silent, and no mount left on its
    device), the clients' mounts work again without a restart, and every
    write that returned before the failure is there."""
    manager, writer_node, reader_node, victim = swarm4.nodes[0], swarm4.nodes[1], swarm4.nodes[2], swarm4.nodes[3]
    volume = unique()
    made["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", volume)
    others = [node_id(n) for n in swarm4.nodes[:3]]
    for other in others:  # the server on node4
        manager.docker("node", "update", "--availability", "drain", other)
    try:
        writer = start(writer_node, volume, 'i=0; while true; do i=$((i+1)); '
                                            'if echo $i > /data/w$i && sync; then echo "ok $i"; fi; sleep 0.2; done')
        reader = start(reader_node, volume)
        made["containers"] += [(writer_node, writer), (reader_node, reader)]
        assert server_node(swarm4, volume) is victim
    finally:
        for other in others:
            manager.docker("node", "update", "--availability", "active", other)
    time.sleep(1)
    victim.kill()
    written = [int(line.split()[1]) for line in writer_node.docker("logs", writer).stdout.split("\n") if line]
    try:
        assert wait(lambda: len(writer_node.docker("logs", writer).stdout.split("\n")) > len(written) + 2,
                    SWARM_DOWN + TAKEOVER_AFTER + 60, 0.2)
        assert server_node(swarm4, volume) in swarm4.nodes[:3]
        for i in written:
            assert reader_node.docker("exec", reader, "cat", f"/data/w{i}").stdout == f"{i}\n"
        assert status(manager, volume)["Global Refcount"] == 2
        assert audited_takeovers(swarm4, f"_vF_{volume}@DS1") == [("VM4", server_node(swarm4, volume).vm)]
    finally:
        victim.revive()


COUNTER = ('i=$(cat /data/n 2>/dev/null || echo 0); echo "start $i"; '
           'while true; do i=$((i+1)); echo $i > /data/t && sync && mv /data/t /data/n && sync; sleep 0.1; done')


# Each slot's task writes its slot on its own volume once, and then says what it finds there.
SLOT = 'test -e /data/slot || echo $SLOT > /data/slot; echo "slot $SLOT has $(cat /data/slot)"; sleep 100000'
# A stack of two services, each with a vsphere volume of its own (#1312's shape).
STACK = """
version: "3.8"
services:
  a:
    image: local/busybox
    command: ["sh", "-c", "test -e /data/made || date +%s%N > /data/made; cat /data/made; sleep 100000"]
    volumes:
      - {type: volume, source: a, target: /data}
  b:
    image: local/busybox
    command: ["sh", "-c", "test -e /data/made || date +%s%N > /data/made; cat /data/made; sleep 100000"]
    volumes:
      - {type: volume, source: b, target: /data}
volumes:
  a: {driver: vsphere}
  b: {driver: vsphere}
"""


def test_a_dead_nodes_services_come_back_with_their_data(swarm4, made, tmp_path):
    """A node runs a one-replica service writing a counter, three slots of a
    service with a volume per slot, and a stack of two services, all on
    vsphere volumes. Kill the node and let no one act: swarm runs every task
    on the other nodes, each takes its own volume over from the dead node
    (silent, no mount left on its device), the counter resumes from its last
    fsynced value, each slot finds its own disk, and no stack volume is made
    again. The node boots again: it takes nothing back, mounts nothing, and
    the services write on."""
    manager, victim = swarm4.nodes[0], swarm4.nodes[3]
    volume, service, slots, stack = unique(), unique(), unique(), unique()
    image = manager.docker("image", "inspect", "-f", "{{.Id}}", "local/busybox").stdout.strip()
    (tmp_path / "stack.yml").write_text(STACK)
    others = [node_id(n) for n in swarm4.nodes[:3]]
    for other in others:  # every task on node4
        manager.docker("node", "update", "--availability", "drain", other)
    try:
        manager.docker("service", "create", "-d", "--name", service, "--no-resolve-image", "--mount",
                       f"type=volume,source={volume},destination=/data,volume-driver=vsphere",
                       image, "sh", "-c", COUNTER)
        manager.docker("service", "create", "-d", "--name", slots, "--replicas", "3", "--no-resolve-image",
                       "--env", "SLOT={{.Task.Slot}}", "--mount",
                       f"type=volume,source={slots}-{{{{.Task.Slot}}}},destination=/data,volume-driver=vsphere",
                       image, "sh", "-c", SLOT)
        manager.docker("stack", "deploy", "--resolve-image", "never", "-c", str(tmp_path / "stack.yml"), stack)
        services = {service: 1, slots: 3, f"{stack}_a": 1, f"{stack}_b": 1}
        assert wait(lambda: all(list(running_tasks(swarm4, s).values()) == [victim] * n
                                for s, n in services.items()), 90, 1), \
            manager.docker("service", "ps", "--no-trunc", *services).stdout
    finally:
        for other in others:
            manager.docker("node", "update", "--availability", "active", other)
    volumes_of = {service: [volume], slots: [f"{slots}-{n}" for n in (1, 2, 3)],
                  f"{stack}_a": [f"{stack}_a"], f"{stack}_b": [f"{stack}_b"]}
    try:
        # What each stack service wrote once, and when its volume was made.
        made_at = {s: (victim.docker("logs", task_container(victim, s)).stdout.strip(), created_at(victim, s))
                   for s in (f"{stack}_a", f"{stack}_b")}
        container = task_container(victim, service)
        assert wait(lambda: counter(victim, container, "/data/n") > 10, 30, 0.2)
        last = counter(victim, container, "/data/n")
        victim.kill()

        def moved():  # every task runs on a live node (a dead node's tasks have none here)
            for name, replicas in services.items():
                at = list(running_tasks(swarm4, name).values())
                if len(at) != replicas or None in at:
                    return False
            return True
        assert wait(moved, SWARM_DOWN + TAKEOVER_AFTER + 60, 1)
        node = task_node(swarm4, service)
        first = node.docker("logs", task_container(node, service)).stdout.split("\n")[0]
        assert first.startswith("start ") and int(first.split()[1]) >= last, (first, last)
        for slot, at in running_tasks(swarm4, slots).items():
            assert at.docker("logs", task_container(at, slots, slot)).stdout.strip() == f"slot {slot} has {slot}"
        for name, then in made_at.items():
            at = task_node(swarm4, name)
            assert (at.docker("logs", task_container(at, name)).stdout.strip(), created_at(at, name)) == then
        taken = {name: audited_takeovers(swarm4, f"{name}@DS1") for names in volumes_of.values() for name in names}

        victim.revive()
        assert wait(lambda: manager.docker("node", "inspect", "-f", "{{.Status.State}}", node_id(victim),
                                           check=False).stdout.strip() == "ready", 60, 1)
        resumed = counter(node, task_container(node, service), "/data/n")
        assert wait(lambda: counter(node, task_container(node, service), "/data/n") > resumed + 10, 30, 0.2)
        assert victim.docker("ps", "-q").stdout.split() == [] and victim.vmdk_mounts() == []
        for name, takeovers in taken.items():
            assert takeovers == [("VM4", takeovers[0][1])] and takeovers[0][1] != "VM4", (name, takeovers)
            assert audited_takeovers(swarm4, f"{name}@DS1") == takeovers
    finally:
        if victim.dockerd.poll() is not None:
            victim.revive()
        manager.docker("stack", "rm", stack)
        manager.docker("service", "rm", service, slots)
        for name in [n for names in volumes_of.values() for n in names]:
            assert wait(lambda: manager.docker("volume", "rm", name, check=False).returncode == 0, 60, 1)


def test_a_partitioned_nodes_volume_is_never_written_twice(swarm4, made):
    """The node running a service's task loses its link to the others, its
    processes alive: the rescheduled task's mount is refused (the holder
    still reports), the old container keeps writing; when the link is back,
    swarm stops the old task, the volume is released, and the new task goes
    on from the old one's last write. Never two loop devices on one file."""
    manager, cut = swarm4.nodes[0], swarm4.nodes[3]
    volume, service = unique(), unique()
    image = manager.docker("image", "inspect", "-f", "{{.Id}}", "local/busybox").stdout.strip()
    others = [node_id(n) for n in swarm4.nodes[:3]]
    for other in others:  # the task on node4
        manager.docker("node", "update", "--availability", "drain", other)
    try:
        manager.docker("service", "create", "-d", "--name", service, "--no-resolve-image", "--mount",
                       f"type=volume,source={volume},destination=/data,volume-driver=vsphere",
                       image, "sh", "-c", COUNTER)
        assert wait(lambda: task_node(swarm4, service) is cut, 60, 0.5)
    finally:
        for other in others:
            manager.docker("node", "update", "--availability", "active", other)
    try:
        old = cut.docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name={service}").stdout.strip()
        assert wait(lambda: counter(cut, old, "/data/n") > 10, 30, 0.2)
        cut.cut()
        refused = f"Failed to attach volume {volume}@DS1: it is attached to VM VM4, whose plugin reported "
        try:
            deadline = time.monotonic() + SWARM_DOWN + TAKEOVER_AFTER + 20
            seen = False
            while time.monotonic() < deadline:
                no_file_has_two_loops(swarm4.datastore)
                errors = manager.docker("service", "ps", "--no-trunc", "--format", "{{.Error}}", service).stdout
                seen = seen or refused in errors
                time.sleep(0.5)
            assert seen
            before = counter(cut, old, "/data/n")
            assert wait(lambda: counter(cut, old, "/data/n") > before, 5, 0.2)  # the old task still writes
        finally:
            cut.cut(False)

        def resumed():
            no_file_has_two_loops(swarm4.datastore)
            node = task_node(swarm4, service)
            moved = node and node.docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name={service}",
                                         check=False).stdout.strip()
            return moved and moved != old and node.docker("logs", moved).stdout.startswith("start ")

        assert wait(resumed, 120, 0.5)
        node = task_node(swarm4, service)
        moved = node.docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name={service}").stdout.strip()
        assert int(node.docker("logs", moved).stdout.split()[1]) >= before
        assert audited_takeovers(swarm4, f"{volume}@DS1") == []
    finally:
        manager.docker("service", "rm", service)
        assert wait(lambda: manager.docker("volume", "rm", volume, check=False).returncode == 0, 60, 1)


def test_orphans_are_found_and_repaired(swarm4, made, admin, monkeypatch):
    """``vfile --check --repair`` repairs what is safe, and deletes a volume's
    metadata only when this node would see its base volume: never from a
    node of another vmgroup, or one that cannot tell its vmgroup."""
    monkeypatch.setenv("VMDKOPS_HOME", swarm4.home)
    manager, elsewhere = swarm4.nodes[0], swarm4.nodes[1]
    image = manager.docker("image", "inspect", "-f", "{{.Id}}", "local/busybox").stdout.strip()
    gone, lonely, own, witness = unique(), unique(), unique(), unique()
    manager.docker("service", "create", "-d", "--name", f"vFileServer{gone}", "--no-resolve-image", image,
                   "sleep", "600")
    assert wait(lambda: f"vFileServer{gone}" not in file_servers(swarm4), HELPER_INTERVAL + 15, 0.5)
    manager.docker("volume", "create", "-d", "vsphere", f"_vF_{lonely}")
    made["volumes"].append(lonely)

    def check(*extra, node=manager):
        return subprocess.run(node.inside([os.sys.executable, "-m", "plugin.vfile", "--config",
                                           os.path.join(node.dir, "vfile.conf"), "--docker_socket",
                                           node.socket, "--state_dir", node.state_dir, "--check", *extra]),
                              capture_output=True, text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(
                                  os.path.abspath(__file__))), env=dict(os.environ, PYTHONPATH=os.path.dirname(
                                      os.path.dirname(os.path.abspath(__file__)))))

    found = check()
    assert found.returncode == 1, found.stderr
    assert f"_vF_{lonely} without metadata" in found.stdout and "docker volume rm" in found.stdout
    repaired = check("--repair")
    assert repaired.returncode == 0 and "repaired" in repaired.stdout
    assert lonely in volumes(manager) and status(manager, lonely)["Volume Status"] == "Ready"
    assert check().stdout.strip() == "etcd, the file servers and the base volumes agree."
    admin.ok("vmgroup create --name=vfother --default-datastore=DS1 --vm-list=VM2")
    try:
        elsewhere.docker("volume", "create", "-d", "vsphere", own)  # it tells the node its vmgroup
        blind = check("--repair", node=elsewhere)
        assert blind.returncode == 1, blind.stdout + blind.stderr
        assert "in vmgroup _DEFAULT; this node sees vfother" in blind.stdout
    finally:
        elsewhere.docker("volume", "rm", own, check=False)
        admin.ok("vmgroup vm rm --name=vfother --vm-list=VM2")
        admin.ok("vmgroup rm --name=vfother")
    assert lonely in volumes(manager)
    manager.docker("volume", "rm", f"_vF_{lonely}")  # its metadata is left without it
    blind = check("--repair")
    assert blind.returncode == 1 and "this node sees no vmgroup" in blind.stdout, blind.stdout
    assert lonely in volumes(manager)
    manager.docker("volume", "create", "-d", "vsphere", witness)
    made["volumes"].append(witness)
    assert "metadata without a base volume (its data is gone)" in check().stdout
    assert check("--repair").returncode == 0
    assert lonely not in volumes(manager) and etcd_keys(swarm4, lonely) == []


def change_roles(swarm, promoted, demoted):
    """Promote a node, wait until it is a reachable manager, then demote another;
    then the etcd members are the managers within 30 s."""
    manager = swarm.nodes[1]
    manager.docker("node", "promote", node_id(promoted))
    assert wait(lambda: manager.docker("node", "inspect", "-f", "{{.ManagerStatus.Reachability}}",
                                       node_id(promoted), check=False).stdout.strip() == "reachable", 60, 0.5)
    manager.docker("node", "demote", node_id(demoted))
    expected = sorted(node_id(n) for n in swarm.nodes if n is not demoted and (
        n is promoted or n.docker("info", "-f", "{{.Swarm.ControlAvailable}}").stdout.strip() == "true"))
    assert wait(lambda: managers(swarm) == expected and etcd_members(manager) == expected,
                HELPER_INTERVAL + 30, 1), (managers(swarm), etcd_members(manager), expected, swarm.etcd_logs())


def test_role_changes(swarm4, made):
    """Promote the worker and demote a manager while a volume is mounted on
    both: the etcd members follow the managers within 30 s, and volumes made
    before and after work everywhere."""
    first, worker = swarm4.nodes[0], swarm4.nodes[3]
    before, after = unique(), unique()
    made["volumes"] += [before, after]
    worker.docker("volume", "create", "-d", "vfile", before)
    on_worker = start(worker, before)
    on_first = start(first, before)
    made["containers"] += [(worker, on_worker), (first, on_first)]
    try:
        change_roles(swarm4, worker, first)
        first.docker("volume", "create", "-d", "vfile", after)
        assert after in volumes(worker) and before in volumes(first)
        on_first_after = start(first, after)
        made["containers"].append((first, on_first_after))
        assert status(worker, before)["Global Refcount"] == 2 and status(worker, after)["Global Refcount"] == 1
        for node, container in ((worker, on_worker), (first, on_first), (first, on_first_after)):
            node.docker("rm", "-f", container)
        assert wait(lambda: all(status(worker, v)["Volume Status"] == "Ready" for v in (before, after)), 30, 0.5)
        for volume in (before, after):
            worker.docker("volume", "rm", volume)
    finally:
        change_roles(swarm4, first, worker)


def test_a_manager_down(swarm4, made):
    """One of three managers down: volumes are made, mounted, counted and
    removed from every other node."""
    first, second, third, worker = swarm4.nodes

    def life(node):
        volume = unique()
        node.docker("volume", "create", "-d", "vfile", volume)
        container = start(node, volume)
        assert status(node, volume)["Global Refcount"] == 1
        node.docker("rm", "-f", container)
        assert wait(lambda: status(node, volume)["Volume Status"] == "Ready", 30, 0.5)
        node.docker("volume", "rm", volume)
    third.kill()
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            for lived in [pool.submit(life, node) for node in (first, second, worker)]:
                lived.result()
    finally:
        third.revive()


def test_a_lost_quorum(swarm4, made):
    """Two of three managers down: every operation fails within the service
    timeout, saying that etcd has no quorum, and changes nothing. One back:
    all works, nothing lost; a share a container used all along works from
    the moment the swarm has a leader again, and one whose file server was
    on a manager that stays dead works again once the server has followed."""
    first, second, third, worker = swarm4.nodes
    kept, used, moved = unique(), unique(), unique()
    made["volumes"] += [kept, used, moved]
    for volume in (kept, used, moved):
        first.docker("volume", "create", "-d", "vfile", volume)
    writers = {}
    try:
        for volume, server in ((used, first), (moved, third)):  # each server on its node
            for node in swarm4.nodes:
                first.docker("node", "update", "--availability", "active" if node is server else "pause",
                             node_id(node))
            writers[volume] = start(worker, volume, WRITER)
            made["containers"].append((worker, writers[volume]))
            assert server_node(swarm4, volume) is server
    finally:
        for node in swarm4.nodes:
            first.docker("node", "update", "--availability", "active", node_id(node))
    writer = writers[used]
    assert wait(lambda: (written(worker, writers[moved]) or 0) > 3, 30, 0.5)
    moved_before = written(worker, writers[moved])
    third.kill()
    try:
        second.kill()
        try:
            commands = (("volume", "create", "-d", "vfile", unique()),
                        ("run", "--rm", "--network", "none", "--volume-driver", "vfile", "-v", f"{kept}:/data",
                         "local/busybox", "true"),
                        ("volume", "rm", kept))
            with concurrent.futures.ThreadPoolExecutor(len(commands)) as pool:
                results = [pool.submit(timed, first.docker, *argv, check=False, timeout=120) for argv in commands]
                # Meanwhile the plugin's own endpoints, one at a time: a Mount under way counts the volume here.
                answers = [(endpoint, *timed(plugin_call, worker, endpoint, {"Name": kept, "ID": "q"}))
                           for endpoint in ("Get", "List", "Mount", "Remove")]
            for argv, (result, seconds) in zip(commands, (r.result() for r in results)):
                # Docker's rm asks Get first, and says only "No such volume" when Get fails.
                assert result.returncode != 0 and ("etcd has no quorum" in result.stderr
                                                   or argv[1] == "rm"), (argv, result.stderr)
                assert seconds <= 45, argv
            for endpoint, answer, seconds in answers:
                assert answer["Err"].startswith("etcd has no quorum (no leader)"), (endpoint, answer)
                assert seconds <= 45, endpoint
        finally:
            second.revive()
        assert wait(lambda: first.docker("node", "ls", check=False).returncode == 0, 60, 0.5)  # a leader
        before = counter(worker, writer, "/data/n")
        assert wait(lambda: counter(worker, writer, "/data/n") > before + 3, 10, 0.5)
        failed = worker.docker("logs", writer).stdout.count("failed")
        time.sleep(2 * HELPER_INTERVAL)  # the managers' loops have seen the node's lease lapsed
        assert worker.docker("logs", writer).stdout.count("failed") == failed
        assert counter(worker, writer, "/data/n") > before + 2 * HELPER_INTERVAL
        assert wait(lambda: first.docker("volume", "inspect", kept, check=False).returncode == 0, 60, 1)
        assert wait(lambda: status(worker, used).get("Global Refcount") == 1, 30, 1), status(worker, used)
        assert status(worker, kept)["Volume Status"] == "Ready"
        container = start(worker, kept)
        worker.docker("rm", "-f", container)
        assert wait(lambda: (written(worker, writers[moved]) or 0) > moved_before,
                    SWARM_DOWN + TAKEOVER_AFTER + 60, 1)
        assert server_node(swarm4, moved) in (first, second, worker)
        assert audited_takeovers(swarm4, f"_vF_{moved}@DS1") == [("VM3", server_node(swarm4, moved).vm)]
    finally:
        if third.dockerd.poll() is not None:
            third.revive()


def kill_etcd(node):
    with open(os.path.join(node.state_dir, "etcd.pid")) as f:
        pid = int(f.read())
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"etcd" in f.read()
    os.kill(pid, signal.SIGKILL)


def restart_plugin(node, ready=READY):
    node.vfile.send_signal(signal.SIGKILL)
    node.vfile.wait()
    if ready == READY:
        node.start_vfile()
    else:
        node.start_vfile(ready=ready)


def test_one_etcd_cluster_ever(swarm4, made):
    """The leader's plugin lost its etcd data while no other manager's etcd
    answered (their ports closed): it starts no cluster of its own beside
    the existing one, says why, and joins it once its members answer."""
    leader, second, third, worker = swarm4.nodes
    kept = unique()
    made["volumes"].append(kept)
    worker.docker("volume", "create", "-d", "vfile", kept)
    cluster_id = json.loads(second.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]["header"][
        "cluster_id"]
    leader.vfile.send_signal(signal.SIGKILL)
    leader.vfile.wait()
    for node in (leader, second, third):
        kill_etcd(node)
    shutil.rmtree(os.path.join(leader.state_dir, "etcd-data"))
    restart_plugin(leader, ready="This swarm's etcd cluster exists")
    time.sleep(3)
    assert not os.path.exists(os.path.join(leader.state_dir, "etcd-data", "member"))
    for node in (second, third):  # their members come back with their data (and the quorum with both)
        restart_plugin(node, ready="Rejoining the etcd cluster with the data")
    for node in (leader, second, third):
        assert wait(lambda: READY in node.vfile_log().rpartition(
            "Starting plugin driver=vfile")[2], 90, 0.5), swarm4.etcd_logs()
    for node in (leader, second, third):
        status_ = json.loads(node.etcdctl("endpoint", "status", "-w", "json").stdout)[0]["Status"]
        assert status_["header"]["cluster_id"] == cluster_id
    assert etcd_members(second) == sorted(node_id(n) for n in (leader, second, third))
    for node in swarm4.nodes:
        assert kept in volumes(node)


def test_a_node_removed_from_the_swarm_reads_nothing(swarm4, made, tmp_path):
    """A node removed from the swarm keeps a valid certificate: the managers'
    gates let it in no more within one helper loop. (Last: the swarm keeps
    three nodes.)"""
    import shutil as files

    from test_vfile import PROBE

    manager, removed = swarm4.nodes[0], swarm4.nodes[3]
    volume = unique()
    made["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", volume)
    kept = tmp_path / "tls"
    files.copytree(os.path.join(removed.state_dir, "tls"), kept)

    def probe():
        return subprocess.run(removed.inside([os.sys.executable, "-c", PROBE, manager.address,
                                              str(kept / "node.crt"), str(kept / "node.key")]),
                              capture_output=True, text=True, timeout=60).stdout

    assert "2379 tls kvs" in probe()
    node = node_id(removed)
    removed.docker("swarm", "leave", "--force")
    manager.docker("node", "rm", "--force", node)
    assert wait(lambda: "2379 tls kvs" not in probe(), HELPER_INTERVAL + 10, 1)
    assert "kvs" not in probe()
