"""Shared volumes (the vfile plugin) on a real three-node swarm: real
dockerds in network namespaces, etcd run by the manager's plugin, Samba file
servers as swarm services over vsphere volumes of a real vmdk-opsd, smbnetfs
mounts on the nodes (spec plugin §4.12, the shared-volume issue's §5). The
scenarios on ``each_swarm`` run again on a swarm whose plugins are managed
plugins, installed on every node from a registry."""

import concurrent.futures
import glob
import json
import os
import signal
import threading
import uuid

import pytest

from swarm_env import run, wait


def unique(prefix="vfile"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def status(node, volume):
    return json.loads(node.docker("volume", "inspect", volume).stdout)[0]["Status"]


def volumes(node, driver="vfile"):
    """The volumes of a driver (a managed plugin's are ``<driver>:latest``)."""
    listed = node.docker("volume", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.split("\n")
    return {line.split()[0] for line in listed if line and line.split()[1].removesuffix(":latest") == driver}


def etcd_keys(swarm, volume):
    """The etcd keys that name a volume, read on the manager."""
    manager = swarm.nodes[0]
    out = run(manager.inside(["etcdctl", "--endpoints=127.0.0.1:2379", "get", "--prefix", "--keys-only",
                              "SVOLS_"]), env=dict(os.environ, ETCDCTL_API="3")).stdout.split()
    return [key for key in out if key.rpartition("_")[2] == volume or key.startswith(f"SVOLS_client_{volume}_")
            or key.startswith((f"SVOLS_gref_{volume}-lock/", f"SVOLS_stat_{volume}-lock/"))]


def base_disk_exists(swarm, volume):
    return any(entry["Name"].startswith(f"_vF_{volume}@") for entry in swarm.executor.ok("VM1", "list"))


def start(node, volume, command="sleep 600"):
    return node.docker("run", "-d", "--network", "none", "-v", f"{volume}:/data", "local/busybox",
                       "sh", "-c", command).stdout.strip()


def file_servers(swarm):
    return swarm.nodes[0].docker("service", "ls", "--format", "{{.Name}}").stdout.split()


def plugin_call(node, endpoint, body, socket_path=None):
    """The vfile plugin's answer to a request of Docker's protocol."""
    import http.client
    import socket

    class Unix(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(socket_path or os.path.join(node.plugin_dir, "vfile.sock"))

    connection = Unix("localhost", timeout=120)
    connection.request("POST", f"/VolumeDriver.{endpoint}", body=json.dumps(body).encode())
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return answer


@pytest.fixture
def cleanup(request):
    """Volumes and containers a test made, removed whatever happened."""
    swarm = request.getfixturevalue(next(name for name in ("each_swarm", "managed_swarm", "swarm")
                                         if name in request.fixturenames))
    made = {"volumes": [], "containers": []}
    yield made
    for node, container in made["containers"]:
        node.docker("rm", "-f", container, check=False)
    for volume in made["volumes"]:
        wait(lambda: swarm.nodes[0].docker("volume", "rm", volume, check=False).returncode == 0
             or volume not in volumes(swarm.nodes[0]), 60, 0.5)


def test_lifecycle_on_each_node(each_swarm, cleanup):
    swarm = each_swarm
    for node in swarm.nodes:
        volume = unique()
        cleanup["volumes"].append(volume)
        node.docker("volume", "create", "-d", "vfile", volume)
        for other in swarm.nodes:
            assert volume in volumes(other)
        container = start(node, volume)
        cleanup["containers"].append((node, container))
        assert status(node, volume)["Global Refcount"] == 1
        assert status(swarm.nodes[0], volume)["Volume Status"] == "Mounted"
        result = node.docker("volume", "rm", volume, check=False)
        assert result.returncode != 0 and "volume is in use" in result.stderr
        node.docker("rm", "-f", container)
        assert status(node, volume)["Global Refcount"] == 0
        assert wait(lambda: status(node, volume)["Volume Status"] == "Ready", 5)
        assert f"vFileServer{volume}" not in file_servers(swarm)
        assert swarm.executor.ok("VM1", "get", f"_vF_{volume}")["status"] == "detached"
        node.docker("volume", "rm", volume)
        assert all(volume not in volumes(other) for other in swarm.nodes)
        assert not base_disk_exists(swarm, volume)
        assert etcd_keys(swarm, volume) == []


def test_two_writers_see_each_other(each_swarm, cleanup):
    swarm = each_swarm
    manager, worker = swarm.nodes[0], swarm.nodes[1]
    volume = unique()
    cleanup["volumes"].append(volume)
    worker.docker("volume", "create", "-d", "vfile", volume)
    on_manager = start(manager, volume)
    cleanup["containers"].append((manager, on_manager))
    assert status(manager, volume)["Global Refcount"] == 1
    on_worker = start(worker, volume)
    cleanup["containers"].append((worker, on_worker))
    assert status(worker, volume)["Global Refcount"] == 2
    assert sorted(status(worker, volume)["Clients"]) == [manager.address, worker.address]
    # A node without a container asks the driver, which knows the other nodes' mounts.
    result = swarm.nodes[2].docker("volume", "rm", volume, check=False)
    assert f"Remove failed: volume {volume} is mounted on node(s) {manager.address}, {worker.address}" \
        in result.stderr
    manager.docker("exec", on_manager, "sh", "-c", "echo QWERTYUIOP000000000000 > /data/test.txt")
    assert worker.docker("exec", on_worker, "cat", "/data/test.txt").stdout == "QWERTYUIOP000000000000\n"
    worker.docker("exec", on_worker, "sh", "-c", "echo ASDFGHJKLL111111111111 > /data/test.txt")
    assert manager.docker("exec", on_manager, "cat", "/data/test.txt").stdout == "ASDFGHJKLL111111111111\n"
    manager.docker("rm", "-f", on_manager)
    assert status(worker, volume)["Global Refcount"] == 1
    worker.docker("rm", "-f", on_worker)
    assert status(worker, volume)["Global Refcount"] == 0
    manager.docker("volume", "rm", volume)


def test_a_killed_managed_plugin_mounts_again(managed_swarm, cleanup):
    """Docker starts a managed vfile plugin again when it dies; its SMB
    client died with it (a managed plugin's helpers live in its container).
    The node's count is kept and the next container there mounts the
    volume again, with the data."""
    manager, worker = managed_swarm.nodes[0], managed_swarm.nodes[1]
    volume = unique()
    cleanup["volumes"].append(volume)
    worker.docker("volume", "create", "-d", "vfile", volume)
    first = start(worker, volume, "echo before > /data/f && sleep 600")
    cleanup["containers"].append((worker, first))
    assert wait(lambda: worker.docker("exec", first, "cat", "/data/f", check=False).stdout == "before\n", 30)
    starts = worker.vfile_log().count("Starting plugin")
    plugin_id = worker.docker("plugin", "inspect", "-f", "{{.Id}}", "vfile").stdout.strip()
    [pid_file] = glob.glob(os.path.join(worker.dir, "exec", "containerd", "daemon", "*", "*", plugin_id, "init.pid"))
    with open(pid_file) as f:
        os.kill(int(f.read()), signal.SIGKILL)
    assert wait(lambda: worker.vfile_log().count("Starting plugin") > starts and "Refcounting successfully completed"
                in worker.vfile_log().split("Starting plugin")[-1], 90, 0.5), worker.vfile_log()[-3000:]
    assert f"The mount of {volume} is gone" in worker.vfile_log().split("Starting plugin")[-1]
    assert status(manager, volume)["Global Refcount"] == 1
    second = start(worker, volume, "cat /data/f && echo after > /data/g && sleep 600")
    cleanup["containers"].append((worker, second))
    assert wait(lambda: worker.docker("logs", second).stdout == "before\n", 30)
    reader = start(manager, volume, "sleep 600")
    cleanup["containers"].append((manager, reader))
    assert wait(lambda: manager.docker("exec", reader, "cat", "/data/g", check=False).stdout == "after\n", 30)
    assert status(manager, volume)["Global Refcount"] == 2
    for node, container in ((worker, first), (worker, second), (manager, reader)):
        node.docker("rm", "-f", container)
    assert wait(lambda: status(manager, volume)["Global Refcount"] == 0
                and status(manager, volume)["Volume Status"] == "Ready", 60, 0.5)
    manager.docker("volume", "rm", volume)


def test_a_service_with_a_replica_on_each_node(each_swarm, cleanup):
    swarm = each_swarm
    manager = swarm.nodes[0]
    volume = unique()
    cleanup["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", volume)
    image = manager.docker("image", "inspect", "-f", "{{.Id}}", "local/busybox").stdout.strip()
    name = unique("writers")
    manager.docker("service", "create", "-d", "--name", name, "--replicas", "3", "--replicas-max-per-node", "1",
                   "--no-resolve-image", "--mount", f"type=volume,source={volume},target=/data,volume-driver=vfile",
                   image, "sh", "-c", 'echo "from $(hostname)" > /data/$(hostname).txt && sleep 600')
    try:
        def everyone_sees_all():
            containers = [(node, node.docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name={name}")
                           .stdout.strip()) for node in swarm.nodes]
            if not all(container for _, container in containers):
                return False
            listings = [node.docker("exec", container, "ls", "/data", check=False).stdout.split()
                        for node, container in containers]
            return all(len([f for f in listing if f.endswith(".txt")]) == 3 for listing in listings)
        assert wait(everyone_sees_all, 60, 0.5)
        assert status(manager, volume)["Global Refcount"] == 3
    finally:
        manager.docker("service", "rm", name)
    assert wait(lambda: status(manager, volume)["Global Refcount"] == 0
                and status(manager, volume)["Volume Status"] == "Ready", 60, 0.5)
    manager.docker("volume", "rm", volume)


# The original's lists (spec §4.12 items 4-6). A shared volume's name is now
# checked at create for what its file server's service name needs (a DNS
# name component), which the original found only at the first mount: the
# names below marked so are refused now.
VALID = ["Volume-00000", "Volume-0000000", "v" + "0" * 50 + "x"]
DNS_REFUSED = ["x" * 89, "Volume-0000000-****-###", "Volume-at@DS1", "Volume@@@@DS1", "Volume-你",
               "Volume Space"]
INVALID = ["x" * 101, "Volume-000000", "volume/abc"]


def test_names(swarm, cleanup):
    manager, worker = swarm.nodes[0], swarm.nodes[1]
    made = [f"{name}-{uuid.uuid4().hex[:4]}" if name.startswith("Volume-0") else name for name in VALID]
    cleanup["volumes"].extend(made)
    with concurrent.futures.ThreadPoolExecutor(len(made)) as pool:
        results = list(pool.map(lambda v: manager.docker("volume", "create", "-d", "vfile", v, check=False), made))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert set(made) <= volumes(worker)
    for name in DNS_REFUSED + INVALID:
        result = manager.docker("volume", "create", "-d", "vfile", name, check=False)
        assert result.returncode != 0 and result.stderr.startswith("Error response from daemon: create"), name
        assert name not in volumes(manager)
        assert etcd_keys(swarm, name) == [] and not base_disk_exists(swarm, name)
    assert "VolumeDriver.Create: Invalid volume name 'Volume Space': the name of a shared volume" in \
        manager.docker("volume", "create", "-d", "vfile", "Volume Space", check=False).stderr
    for volume in made:
        manager.docker("volume", "rm", volume)


def test_options(swarm, cleanup):
    manager = swarm.nodes[0]
    volume = unique()
    cleanup["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", "-o", "size=1gb", volume)
    # Docker answers a create of a name it knows itself; the driver is asked on a node that does not.
    assert plugin_call(swarm.nodes[2], "Create", {"Name": volume, "Opts": {"size": "1gb"}})["Err"] == ""
    assert plugin_call(swarm.nodes[2], "Create", {"Name": volume, "Opts": {"size": "2gb"}})["Err"] == \
        f"Volume {volume} already exists with different options"
    executor_status = swarm.executor.ok("VM1", "get", f"_vF_{volume}")
    assert executor_status["capacity"]["size"] == "1GB"
    for option, message in (("size=100mbb", "Invalid format for size."), ("size=100gbEE", "Invalid format for size."),
                            ("sizes=100mb", "Invalid options: ['sizes']")):
        bad = unique()
        result = manager.docker("volume", "create", "-d", "vfile", "-o", option, bad, check=False)
        assert result.returncode != 0 and f"Failed to create internal volume {bad}. Reason: " in result.stderr
        assert message in result.stderr
        assert etcd_keys(swarm, bad) == [] and not base_disk_exists(swarm, bad)
    manager.docker("volume", "rm", volume)


def test_concurrent_mounts_start_one_file_server(swarm, cleanup):
    volume = unique()
    cleanup["volumes"].append(volume)
    swarm.nodes[1].docker("volume", "create", "-d", "vfile", volume)
    targets = swarm.nodes + [swarm.nodes[0]]
    go = threading.Barrier(len(targets))

    def mount(node):
        go.wait()
        return node, start(node, volume)

    with concurrent.futures.ThreadPoolExecutor(len(targets)) as pool:
        started = list(pool.map(mount, targets))
    cleanup["containers"].extend(started)
    assert file_servers(swarm).count(f"vFileServer{volume}") == 1
    assert status(swarm.nodes[2], volume)["Global Refcount"] == 3  # nodes, not containers
    for node, container in started:
        node.docker("rm", "-f", container)
    assert wait(lambda: status(swarm.nodes[0], volume)["Volume Status"] == "Ready", 30, 0.5)
    swarm.nodes[0].docker("volume", "rm", volume)


def test_concurrent_creates(swarm, cleanup):
    made = [unique() for _ in range(10)]
    cleanup["volumes"].extend(made)
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: swarm.nodes[i % 3].docker("volume", "create", "-d", "vfile", made[i],
                                                                    check=False), range(10)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    listed = swarm.nodes[2].docker("volume", "ls", "-q", "-f", "driver=vfile").stdout.split()
    assert all(listed.count(v) == 1 for v in made)
    assert all(sum(e["Name"].startswith(f"_vF_{v}@") for e in swarm.executor.ok("VM1", "list")) == 1 for v in made)
    same = unique()
    cleanup["volumes"].append(same)
    go = threading.Barrier(2)

    def create(node):
        go.wait()
        return node.docker("volume", "create", "-d", "vfile", same, check=False)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(create, swarm.nodes[:2]))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert swarm.nodes[2].docker("volume", "ls", "-q", "-f", "driver=vfile").stdout.split().count(same) == 1
    assert sum(e["Name"].startswith(f"_vF_{same}@") for e in swarm.executor.ok("VM1", "list")) == 1
    for volume in made + [same]:
        swarm.nodes[0].docker("volume", "rm", volume)


def test_quotas_of_the_auth_db_hold(swarm, cleanup, admin, monkeypatch):
    monkeypatch.setenv("VMDKOPS_HOME", str(swarm.home))
    admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=500MB")
    try:
        volume = unique()
        result = swarm.nodes[2].docker("volume", "create", "-d", "vfile", "-o", "size=600mb", volume, check=False)
        assert "The total volume size exceeds the usage quota" in result.stderr
        assert volume not in volumes(swarm.nodes[0]) and etcd_keys(swarm, volume) == []
    finally:
        admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=unset")


def test_until_etcd_answers_the_driver_says_so(swarm, tmp_path):
    """A vfile plugin whose etcd cannot be reached answers the original's text."""
    node = swarm.nodes[2]
    log = os.path.join(node.dir, "vfile-unreachable.log")
    argv = node.inside([os.sys.executable, "-m", "plugin.vfile", "--config", os.path.join(node.dir, "none.conf"),
                        "--driver", "vfile", "--socket_dir", str(tmp_path), "--mount_root", str(tmp_path / "mnt"),
                        "--docker_socket", node.socket, "--log_path", log, "--state_dir", str(tmp_path / "state"),
                        "--etcd_endpoints", "127.0.0.1:9"])
    import subprocess

    from executor import REPO, stop_process
    process = subprocess.Popen(argv, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait(lambda: os.path.exists(tmp_path / "vfile.sock"), 30)
        for endpoint in ("Create", "List", "Get", "Mount", "Remove"):
            answer = plugin_call(node, endpoint, {"Name": "x", "ID": "m"}, str(tmp_path / "vfile.sock"))
            assert answer["Err"] == "VSSD volume driver is not fully initialized yet.", endpoint
        assert wait(lambda: "Failed to create new KV store. Retry" in node.read(log)
                    and "etcd" in node.read(log), 30)
    finally:
        stop_process(process)
