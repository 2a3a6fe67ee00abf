"""Shared volumes (the vfile plugin) on a real three-node swarm: real
dockerds in network namespaces, etcd run by the manager's plugin, Samba file
servers as swarm services over vsphere volumes of a real vmdk-opsd, smbnetfs
mounts on the nodes (spec plugin §4.12, the shared-volume issue's §5). The
scenarios on ``each_swarm`` run again on a swarm whose plugins are managed
plugins, installed on every node from a registry."""

import calendar
import concurrent.futures
import glob
import json
import os
import signal
import threading
import time
import uuid

import pytest

from plugin.refcount import READY
from rig import wait
from rig.swarm import base_disk_exists, etcd_keys, file_servers, plugin_call, start, status, volumes


def unique(prefix="vfile"):
    return f"{prefix}{uuid.uuid4().hex[:8]}"


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
        created = time.time()
        node.docker("volume", "create", "-d", "vfile", volume)
        for other in swarm.nodes:
            assert volume in volumes(other)
        made = json.loads(swarm.nodes[-1].docker("volume", "inspect", volume).stdout)[0]["CreatedAt"]
        assert created - 1 <= calendar.timegm(time.strptime(made, "%Y-%m-%dT%H:%M:%SZ")) <= time.time()
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
    assert wait(lambda: worker.vfile_log().count("Starting plugin") > starts and READY
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
                        "--etcd_endpoints", "http://127.0.0.1:9"])
    import subprocess

    from rig.executor import REPO, stop_process
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


# A client of etcd from anywhere: what the managers' client and peer ports
# answer to a range over every shared volume's keys (their passwords included).
PROBE = r'''
import http.client, json, socket, ssl, sys
host, cert = sys.argv[1], sys.argv[2:]
body = json.dumps({"key": "U1ZPTFNf", "range_end": "U1ZPTFNg"}).encode()  # SVOLS_ .. SVOLS`
request = (b"POST /v3/kv/range HTTP/1.1\r\nHost: etcd\r\nContent-Type: application/json\r\n"
           b"Content-Length: %d\r\n\r\n" % len(body) + body)
for port in (2379, 2380):
    try:
        plain = socket.create_connection((host, port), timeout=5)
        plain.sendall(request)
        print(port, "plain", repr(plain.recv(65536)[:300]))
    except OSError as exc:
        print(port, "plain refused", type(exc).__name__)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    if cert:
        context.load_cert_chain(*cert)
    try:
        secure = context.wrap_socket(socket.create_connection((host, port), timeout=5))
        secure.sendall(request)
        answer = b""
        while b"}" not in answer[-3:]:
            chunk = secure.recv(65536)
            if not chunk:
                break
            answer += chunk
        print(port, "tls", "kvs" if b'"kvs"' in answer else "", repr(answer[:60]))
    except OSError as exc:
        print(port, "tls refused", type(exc).__name__)
'''


def test_etcd_takes_only_members_of_the_swarm(swarm, tmp_path):
    """A host on the swarm's network that is no member of it reads and
    writes nothing in etcd: plain HTTP, TLS without a certificate, and TLS
    with a certificate of another CA are refused on the client and the peer
    port. The node's own certificate, from the same host, is answered."""
    import subprocess

    volume = f"tls{uuid.uuid4().hex[:6]}"
    manager = swarm.nodes[0]
    manager.docker("volume", "create", "-d", "vfile", volume)
    try:
        key, cert = tmp_path / "other.key", tmp_path / "other.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", "1", "-subj", "/O=another/OU=swarm-manager/CN=intruder",
                        "-addext", "subjectAltName=DNS:swarm-manager", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        tls = os.path.join(manager.state_dir, "tls")
        with swarm.outsider() as inside:
            def probe(*certificate):
                return subprocess.run(inside([os.sys.executable, "-c", PROBE, manager.address, *certificate]),
                                      capture_output=True, text=True, timeout=60).stdout
            for answer in (probe(), probe(str(cert), str(key))):
                assert answer.count("\n") == 4, answer
                assert volume not in answer and "kvs" not in answer and "revision" not in answer, answer
                assert "2379 tls refused" in answer or "2379 tls  b''" in answer, answer
            member = probe(os.path.join(tls, "node.crt"), os.path.join(tls, "node.key"))
            assert "2379 tls kvs b'HTTP/1.1 200 OK" in member, member
    finally:
        manager.docker("volume", "rm", volume, check=False)


# An SMB client of our own on a node: smbnetfs with the share's credentials
# bound to the server, and the client settings given; the text it reads.
SMB_CLIENT = r'''
set -e
home=$(mktemp -d); mkdir -m 700 "$home/.smb" "$home/tree"
printf 'auth "%s/vfileshare" "%s" "%s"\n' "$1" "$3" "$4" > "$home/.smb/smbnetfs.conf"
printf '[global]\n    client min protocol = SMB2\n    client max protocol = %s\n' "$5" > "$home/.smb/smb.conf"
chmod 600 "$home/.smb/"*
HOME=$home smbnetfs "$home/tree" -f & pid=$!
sleep 1
timeout 20 cat "$home/tree/$1:$2/vfileshare/secret.txt" || echo "refused"
umount -l "$home/tree"; kill $pid; rm -rf "$home"
'''


def test_the_share_password_is_a_swarm_secret_and_the_share_is_encrypted(swarm, cleanup):
    """The password reaches the file server as a swarm secret (removed with
    it), never in a service's or container's settings; the server takes
    only encrypted SMB3 sessions; a node's plugin files are root's alone."""
    import subprocess

    manager, node = swarm.nodes[0], swarm.nodes[1]
    volume = unique()
    cleanup["volumes"].append(volume)
    node.docker("volume", "create", "-d", "vfile", volume)
    container = start(node, volume, "echo shh > /data/secret.txt; sleep 600")
    cleanup["containers"].append((node, container))
    info = json.loads(manager.etcdctl("get", "--print-value-only", f"SVOLS_info_{volume}").stdout)
    password = info["password"]
    service = json.loads(manager.docker("service", "inspect", f"vFileServer{volume}").stdout)[0]
    assert password not in json.dumps(service)
    spec = service["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert [(s["File"]["Name"], s["File"]["Mode"]) for s in spec["Secrets"]] == [("vfile-password", 0o400)]
    assert not any(e.startswith("VFILE_PASSWORD=") for e in spec["Env"])
    [server] = [n for n in swarm.nodes if n.address == info["address"]]
    [task] = server.docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name=vFileServer{volume}").stdout.split()
    assert password not in server.docker("inspect", task).stdout
    assert server.docker("exec", task, "cat", "/run/secrets/vfile-password").stdout == password
    # SMB2 has no encryption: such a client is refused, an SMB3 one reads.
    for protocol, expected in (("SMB2_10", "refused"), ("SMB3", "shh")):
        read = subprocess.run(node.inside(["sh", "-c", SMB_CLIENT, "client", info["address"], str(info["port"]),
                                           info["username"], password, protocol]),
                              capture_output=True, text=True, timeout=60).stdout
        assert read.strip() == expected, (protocol, read)
    served = server.docker("exec", task, "cat", "/etc/samba/smb.conf").stdout
    assert "server min protocol = SMB3" in served and "smb encrypt = required" in served
    for each in swarm.nodes:
        assert oct(os.stat(each.state_dir).st_mode & 0o777) == "0o700"
    smbnetfs = open(os.path.join(node.state_dir, "smbnetfs", volume, ".smb", "smbnetfs.conf")).read()
    assert smbnetfs.startswith('auth "127.0.0.1/vfileshare" ')  # the node's relay to this server, only
    node.docker("rm", "-f", container)
    assert wait(lambda: f"vFileServer{volume}" not in file_servers(swarm), 60, 0.5)
    assert wait(lambda: manager.docker("secret", "ls", "-q", "-f",
                                       f"label=vmdkops.vfile.volume={volume}").stdout == "", 30, 0.5)


def test_a_mount_of_a_volume_that_is_gone_says_so(swarm):
    """Removed on another node a moment before: Mount answers as Get does."""
    node = swarm.nodes[1]
    gone = unique()
    answer = plugin_call(node, "Mount", {"Name": gone, "ID": "m1"})
    assert answer["Err"] == "No such volume", answer
    assert plugin_call(node, "Get", {"Name": gone})["Err"] == "No such volume"


def test_creating_a_volume_that_exists_keeps_its_options(swarm, cleanup):
    """As the README says: Docker finds the volume and does not ask the driver."""
    manager, node = swarm.nodes[0], swarm.nodes[2]
    volume = unique()
    cleanup["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", "-o", "size=20mb", volume)
    assert node.docker("volume", "create", "-d", "vfile", "-o", "size=50mb", volume).returncode == 0
    assert status(node, volume)["Options"] == {"size": "20mb"}


def node_ids(swarm):
    return [n.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip() for n in swarm.nodes]


def test_a_slow_volume_does_not_stall_the_node(swarm, cleanup):
    """A volume whose file server cannot start yet (every node paused: swarm
    places no task) keeps its Mount waiting; meanwhile another volume's
    Mount on the same node answers at once."""
    import subprocess

    manager, node = swarm.nodes[0], swarm.nodes[1]
    fast, slow = unique(), unique()
    cleanup["volumes"] += [fast, slow]
    for volume in (fast, slow):
        manager.docker("volume", "create", "-d", "vfile", volume)
    cleanup["containers"].append((node, start(node, fast)))
    for each in node_ids(swarm):
        manager.docker("node", "update", "--availability", "pause", each)
    waiting = subprocess.Popen([*node.docker_argv(), "run", "-d", "--network", "none", "-v", f"{slow}:/data",
                                "local/busybox", "sleep", "600"], stdout=subprocess.PIPE, text=True)
    try:
        assert wait(lambda: f"Mounting volume name={slow}" in node.vfile_log(), 30, 0.2)
        time.sleep(1)
        started = time.monotonic()
        cleanup["containers"].append((node, start(node, fast)))
        assert time.monotonic() - started < 10
        assert waiting.poll() is None  # still waiting for its file server
    finally:
        for each in node_ids(swarm):
            manager.docker("node", "update", "--availability", "active", each)
        out, _ = waiting.communicate(timeout=120)
        if out.strip():
            cleanup["containers"].append((node, out.strip()))


def test_a_mount_docker_gave_up_on_is_undone(swarm, cleanup):
    """Docker's client is gone when the Mount is done: it is not counted, and
    no record of it is left in etcd."""
    import socket

    node, manager = swarm.nodes[1], swarm.nodes[0]
    volume = unique()
    cleanup["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", volume)
    body = json.dumps({"Name": volume, "ID": "given-up"}).encode()
    client = socket.socket(socket.AF_UNIX)
    client.connect(os.path.join(node.plugin_dir, "vfile.sock"))
    client.sendall(b"POST /VolumeDriver.Mount HTTP/1.1\r\nHost: docker\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(body), body))
    client.close()  # as Docker does when its plugin timeout passes
    assert wait(lambda: f"Docker was gone when the Mount of {volume} was done" in node.vfile_log(), 90, 0.5)
    assert status(node, volume)["Global Refcount"] == 0 and status(node, volume)["Clients"] is None
    assert not any(key.startswith(f"SVOLS_mount_{volume}_") for key in etcd_keys(swarm, volume))
    assert plugin_call(node, "Path", {"Name": volume})["Mountpoint"] == ""
    assert wait(lambda: status(manager, volume)["Volume Status"] == "Ready", 30, 0.5)


def test_an_unmount_while_etcd_is_out_of_reach_is_settled(swarm, cleanup):
    """A container stops on a node cut off from the managers: the share is
    unmounted there (Docker's Get before its Unmount answers from what the
    node knows), and its record goes once etcd answers again."""
    node, manager = swarm.nodes[2], swarm.nodes[0]
    volume = unique()
    cleanup["volumes"].append(volume)
    manager.docker("volume", "create", "-d", "vfile", volume)
    container = start(node, volume)
    cleanup["containers"].append((node, container))
    assert status(manager, volume)["Global Refcount"] == 1
    node.cut()
    try:
        node.docker("rm", "-f", container)
        assert wait(lambda: f"The unmount of {volume} is recorded in etcd as soon as it answers"
                    in node.vfile_log(), 30, 0.5), node.vfile_log()[-3000:]
        assert node.share_mounts() == []
    finally:
        node.cut(False)
    assert wait(lambda: status(manager, volume)["Global Refcount"] == 0, 30, 0.5)
    assert wait(lambda: status(manager, volume)["Volume Status"] == "Ready", 45, 0.5)
