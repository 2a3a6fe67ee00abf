"""The plugin end to end: a real dockerd per Docker host, the plugin on its
socket, a real vmdk-opsd, loop devices, mkfs and mount (spec plugin Part A;
the ten scenarios of the plugin issue). Those of a Docker user run on the
managed plugin too, installed from a private registry (``BOTH``)."""

import calendar
import http.client
import json
import socket
import time

import pytest

from conftest import parse_table
from rig import wait

BOTH = pytest.mark.parametrize("docker_host", ["legacy", "managed"], indirect=True)


def inspect(host, name):
    return json.loads(host.docker("volume", "inspect", name).stdout)[0]


def wait_for(predicate, timeout=15):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.2)
    return predicate()


def executor_status(executor, vm, name):
    return executor.ok(vm, "get", name)["status"]


@BOTH
def test_s1_create_list_inspect(docker_host, executor):
    """(xfs from xfsprogs 6 needs more than 300 MB, so 400mb rather than 200mb.)"""
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "-o", "size=400mb", "-o", "fstype=xfs", "v1")
    names = host.docker("volume", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.split("\n")
    assert f"v1@DS1 {host.listed_driver}" in names
    created = time.time()
    status = inspect(host, "v1")["Status"]
    assert status["capacity"]["size"] == "400MB" and status["datastore"] == "DS1"
    made = calendar.timegm(time.strptime(inspect(host, "v1")["CreatedAt"], "%Y-%m-%dT%H:%M:%SZ"))
    assert created - 60 < made <= created + 1
    assert (status["status"], status["created by VM"], status["fstype"], status["diskformat"],
            status["access"], status["attach-as"]) == (
        "detached", "VM1", "xfs", "thin", "read-write", "independent_persistent")


@pytest.mark.parametrize("diskformat, fstype", [("thin", "ext4"), ("zeroedthick", "ext4"),
                                               ("eagerzeroedthick", "ext4"), ("zeroedthick", "xfs")])
def test_the_disk_format_survives_the_filesystem(docker_host, executor, diskformat, fstype):
    """mkfs must not discard a thick disk's blocks: allocated stays the size."""
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "-o", "size=400mb", "-o", f"diskformat={diskformat}",
                "-o", f"fstype={fstype}", "fmt")
    allocated = executor.ok("VM1", "get", "fmt")["capacity"]["allocated"]
    if diskformat == "thin":
        assert allocated.endswith("KB") or int(allocated[:-2]) < 100, allocated
    else:
        assert allocated == "400MB", allocated
    assert host.run(["-v", "fmt:/data"], "echo ok > /data/f && cat /data/f").stdout == "ok\n"


@BOTH
def test_s2_data_survives_detach_and_attach(docker_host):
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "v1")
    host.run(["-v", "v1:/data"], "echo hello > /data/file")
    assert host.run(["-v", "v1:/data"], "cat /data/file").stdout == "hello\n"


def test_s3_two_containers_share_a_mount(docker_host, executor):
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "v1")
    first = host.docker("run", "-d", "--network", "none", "-v", "v1:/data", "local/busybox",
                        "sleep", "600").stdout.strip()
    second = host.docker("run", "-d", "--network", "none", "-v", "v1:/data", "local/busybox",
                         "sleep", "600").stdout.strip()
    assert executor_status(executor, "VM1", "v1") == "attached"
    assert len(host.mounted()) == 1
    host.docker("rm", "-f", first)
    assert len(host.mounted()) == 1
    host.docker("exec", second, "sh", "-c", "echo still > /data/f")
    host.docker("rm", "-f", second)
    assert host.mounted() == []
    assert executor_status(executor, "VM1", "v1") == "detached"


def test_s4_remove_and_bad_options(docker_host, executor):
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "v1")
    host.run(["-v", "v1:/data"], "true")
    host.docker("volume", "rm", "v1")
    assert executor.ok("VM1", "list") == []
    for option, message in (
            ("size=1.5gb", "VolumeDriver.Create: Invalid format for size."),
            ("diskformat=foo", "VolumeDriver.Create: Disk Allocation Format 'foo' is not supported."),
            ("foo=bar", "VolumeDriver.Create: Invalid options: ['foo']")):
        result = host.docker("volume", "create", "-d", host.driver, "-o", option, "vbad", check=False)
        assert result.returncode != 0
        assert "Error response from daemon: create vbad: " + message in result.stderr
    result = host.docker("volume", "create", "-d", host.driver, "-o", "fstype=funnyfs", "vbad", check=False)
    assert "Not found mkfs for funnyfs" in result.stderr
    assert executor.ok("VM1", "list") == []


@BOTH
def test_s5_read_only(docker_host):
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "-o", "access=read-only", "ro")
    result = host.run(["-v", "ro:/data"], "touch /data/x", check=False)
    assert result.returncode != 0 and "Read-only file system" in result.stderr


@BOTH
def test_s6_quota(docker_host, admin):
    admin.ok("config init --local")
    admin.ok("vmgroup access set --name=_DEFAULT --datastore=_VM_DS --volume-totalsize=1GB")
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "-o", "size=600mb", "q1")
    result = host.docker("volume", "create", "-d", host.driver, "-o", "size=600mb", "q2", check=False)
    assert "VolumeDriver.Create: The total volume size exceeds the usage quota" in result.stderr


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_a_resized_volume_grows_its_filesystem_at_the_next_mount(docker_host, admin, fstype):
    """Resize while no container uses it (refused while one does); the next
    container sees the new size and the data."""
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "-o", "size=400mb", "-o", f"fstype={fstype}", "big")
    running = host.docker("run", "-d", "--network", "none", "-v", "big:/data", "local/busybox",
                          "sh", "-c", "echo kept > /data/f && sync && sleep 600").stdout.strip()
    assert "stop the containers that use it" in admin.err("volume resize --volume=big@DS1 --size=900MB")
    host.docker("rm", "-f", running)
    assert admin.ok("volume resize --volume=big@DS1 --size=900MB") == \
        "Volume big@DS1 resized from 400 MB to 900 MB\n"
    assert inspect(host, "big")["Status"]["capacity"]["size"] == "900MB"
    shown = host.run(["-v", "big:/data"], "cat /data/f && df -m /data | tail -1").stdout.split("\n")
    assert shown[0] == "kept"
    total_mb = int(shown[1].split()[1])
    assert 800 < total_mb <= 900, shown
    shown = host.run(["-v", "big:/data"], "df -m /data | tail -1").stdout  # grown once, then as it is
    assert int(shown.split()[1]) == total_mb


@BOTH
def test_s7_tenancy(docker_host, admin):
    admin.ok("config init --local")
    admin.ok("vmgroup create --name=other --default-datastore=DS2 --vm-list=VM2")
    host1, host2 = docker_host("VM1"), docker_host("VM2")
    host1.docker("volume", "create", "-d", host1.driver, "mine")
    assert "mine" not in host2.docker("volume", "ls").stdout
    result = host2.run(["--volume-driver", host2.driver, "-v", "mine@DS1:/data"], "true", check=False)
    assert result.returncode != 0
    assert host1.run(["-v", "mine:/data"], "true").returncode == 0


@BOTH
def test_s8_move_between_hosts(docker_host, executor):
    host1, host2 = docker_host("VM1"), docker_host("VM2")
    host1.docker("volume", "create", "-d", host1.driver, "moving")
    host1.run(["-v", "moving:/data"], "echo from-host-1 > /data/f")
    out = host2.run(["--volume-driver", host2.driver, "-v", "moving@DS1:/data"], "cat /data/f").stdout
    assert out == "from-host-1\n"
    assert executor_status(executor, "VM1", "moving@DS1") == "detached"


def test_s9_plugin_restart_keeps_volumes_in_use(docker_host, executor):
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "busy")
    container = host.docker("run", "-d", "--network", "none", "-v", "busy:/data", "local/busybox",
                            "sh", "-c", "while true; do date >> /data/log; sleep 0.2; done").stdout.strip()
    time.sleep(0.5)
    host.stop_plugin(__import__("signal").SIGKILL)
    host.start_plugin()
    assert host.log_has("Volume name=busy@DS1 count=1 mounted=true")
    lines = int(host.docker("exec", container, "sh", "-c", "wc -l < /data/log").stdout)
    time.sleep(0.6)
    assert int(host.docker("exec", container, "sh", "-c", "wc -l < /data/log").stdout) > lines
    assert executor_status(executor, "VM1", "busy") == "attached"
    host.docker("rm", "-f", container)
    assert host.mounted() == []
    assert executor_status(executor, "VM1", "busy") == "detached"


def test_recovery_releases_what_no_container_uses(docker_host, executor):
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "left")
    container = host.docker("run", "-d", "--network", "none", "-v", "left:/data", "local/busybox",
                            "sleep", "600").stdout.strip()
    host.stop_plugin(__import__("signal").SIGKILL)
    host.docker("rm", "-f", container, check=False)  # the Unmount cannot reach the plugin
    host.start_plugin()
    assert host.mounted() == []
    assert executor_status(executor, "VM1", "left") == "detached"


def test_the_plugin_reports_that_its_vm_is_alive(docker_host, admin):
    """Every ReportInterval (5 s) the plugin tells the executor that its VM
    is alive; ``host vm ls`` shows when it last did; a plugin killed falls
    silent (its VM's volumes can then be taken over)."""
    from rig import VM1_UUID
    from vmdkops_admin.db import modes
    from vmdkops_admin.executor import liveness

    def last():
        with modes.reader() as query:
            return liveness.last_reports(query).get(VM1_UUID)

    admin.ok("config init --local")
    host = docker_host()
    assert wait_for(lambda: last() is not None)
    rows = {r["Name"]: r["Last_report"] for r in parse_table(admin.ok("host vm ls"))}
    assert rows["VM1"].endswith("s ago") and rows["VM2"] == "never"
    host.stop_plugin(__import__("signal").SIGKILL)
    silent = last()
    time.sleep(2 * liveness.REPORT_INTERVAL)
    assert last() == silent
    host.start_plugin()
    assert wait_for(lambda: last() > silent)


def test_a_dead_host_that_comes_back_leaves_its_taken_volume_alone(docker_host, executor, admin, inventory):
    """VM1 dies with a container writing to db; VM2 takes db over. VM1 boots
    again: its plugin's recovery attaches and counts nothing, and starting the
    old container is refused naming VM2, whose container writes on undisturbed."""
    from rig.executor import no_file_has_two_loops

    admin.ok("config init --local")
    admin.ok("vmgroup update --name=_DEFAULT --takeover-after=8s")  # > the plugins' ReportInterval (5 s)
    first, second = docker_host("VM1"), docker_host("VM2")
    first.docker("volume", "create", "-d", first.driver, "db")
    old = first.docker("run", "-d", "--network", "none", "-v", "db:/data", "local/busybox", "sh", "-c",
                       "echo one > /data/f && sync && sleep 600").stdout.strip()
    assert wait_for(lambda: first.docker("exec", old, "cat", "/data/f", check=False).stdout == "one\n")
    assert wait_for(lambda: "s ago" in {r["Name"]: r["Last_report"]
                                        for r in parse_table(admin.ok("host vm ls"))}["VM1"])
    first.die()
    time.sleep(9)  # longer than takeover-after
    new = second.docker("run", "-d", "--network", "none", "-v", "db@DS1:/data", "local/busybox", "sh", "-c",
                        "cat /data/f > /data/g && while true; do date >> /data/log; sleep 0.2; done").stdout.strip()
    assert wait_for(lambda: second.docker("exec", new, "cat", "/data/g", check=False).stdout == "one\n")

    first.start_dockerd()
    first.start_plugin()
    assert first.mounted() == []
    assert inspect(first, "db")["Mountpoint"] == ""
    started = first.docker("start", old, check=False)
    assert started.returncode != 0
    assert "Failed to attach volume db@DS1: it is attached to VM VM2, whose plugin reported" in started.stderr, \
        started.stderr
    assert first.mounted() == [] and executor.ok("VM2", "get", "db@DS1")["attached to VM"] == "VM2"
    no_file_has_two_loops(inventory.datastore_by_name("DS1").path)
    lines = int(second.docker("exec", new, "sh", "-c", "wc -l < /data/log").stdout)
    assert wait_for(lambda: int(second.docker("exec", new, "sh", "-c", "wc -l < /data/log").stdout) > lines + 3)


def test_s10_implicit_create(docker_host, executor):
    host = docker_host()
    out = host.run(["--volume-driver", host.driver, "-v", "v9:/data"], "echo ok > /data/f && cat /data/f")
    assert out.stdout == "ok\n"
    assert executor.ok("VM1", "get", "v9")["fstype"] == "ext4"


# -- the protocol, straight on the plugin's socket -------------------------------------

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def post(host, path, body):
    connection = UnixHTTP(host.plugin_socket)
    connection.request("POST", path, body=body,
                       headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type"), data


def test_protocol(docker_host):
    host = docker_host()
    assert post(host, "/Plugin.Activate", b"") == (
        200, "application/vnd.docker.plugins.v1.1+json", b'{"Implements": ["VolumeDriver"]}\n')
    status, _, body = post(host, "/VolumeDriver.Capabilities", b"{}")
    assert status == 200 and json.loads(body)["Capabilities"] == {"Scope": "global"}
    assert post(host, "/VolumeDriver.Nope", b"{}")[0] == 404
    assert post(host, "/VolumeDriver.Create", b"{not json")[0] == 400
    status, _, body = post(host, "/VolumeDriver.Get", b'{"Name": 5}')
    assert (status, json.loads(body)["Err"]) == (500, "Name must be a string")
    status, _, body = post(host, "/VolumeDriver.Create", b'{"Name": "implicit", "Opts": null}')
    assert (status, json.loads(body)) == (200, {"Mountpoint": "", "Err": "", "Volumes": None,
                                                 "Volume": None, "Capabilities": {"Scope": ""}})
    status, _, body = post(host, "/VolumeDriver.Get", b'{"Name": "nosuch"}')
    assert status == 500 and json.loads(body)["Err"].startswith("Volume nosuch not found")
    status, _, body = post(host, "/VolumeDriver.Path", b'{"Name": "implicit@DS1"}')
    assert json.loads(body)["Mountpoint"] == ""  # not mounted
    status, _, body = post(host, "/VolumeDriver.Mount", b'{"Name": "implicit", "ID": "m1"}')
    assert json.loads(body)["Mountpoint"] == f"{host.mount_root}/implicit@DS1/"
    for name in (b"implicit", b"implicit@DS1"):
        status, _, body = post(host, "/VolumeDriver.Path", b'{"Name": "' + name + b'"}')
        assert json.loads(body)["Mountpoint"] == f"{host.mount_root}/implicit@DS1/"
    status, _, body = post(host, "/VolumeDriver.Unmount", b'{"Name": "implicit", "ID": "m1"}')
    assert status == 200 and host.mounted() == []
    import os
    import stat
    mode = os.stat(host.plugin_socket)
    assert stat.S_IMODE(mode.st_mode) == 0o660
    host.stop_plugin()
    assert host.plugin.returncode == 0 and not os.path.exists(host.plugin_socket)


def test_a_mount_docker_gave_up_on_is_undone(docker_host, executor):
    """Docker's client is gone when the Mount is done (its plugin timeout
    passed): the volume is not counted, not mounted, and detached again."""
    host = docker_host()
    host.docker("volume", "create", "-d", host.driver, "given-up")
    body = b'{"Name": "given-up", "ID": "m1"}'
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(host.plugin_socket)
    client.sendall(b"POST /VolumeDriver.Mount HTTP/1.1\r\nHost: docker\r\nContent-Length: %d\r\n\r\n%s"
                   % (len(body), body))
    client.close()
    assert wait(lambda: host.log_has("Docker was gone when the Mount of given-up was done"), 60)
    assert host.mounted() == []
    status, _, answer = post(host, "/VolumeDriver.Path", b'{"Name": "given-up"}')
    assert json.loads(answer)["Mountpoint"] == ""
    assert executor_status(executor, host.vm, "given-up") == "detached"


def test_nothing_is_removed_before_recovery(executor, tmp_path):
    """While Docker does not answer, recovery waits and Remove is refused."""
    import os
    import subprocess
    import sys

    from rig.executor import REPO

    (tmp_path / "docker.sock").write_text("")  # there, but nobody answers: Docker is starting
    credential = tmp_path / "credential"
    credential.write_text(executor.token("VM1"))
    driver = f"vmdkt{os.getpid()}init"
    plugin = subprocess.Popen(
        [sys.executable, "-m", "plugin.vsphere", "--config", str(tmp_path / "none.conf"),
         "--driver", driver, "--socket_dir", str(tmp_path), "--mount_root", str(tmp_path / "mnt"),
         "--executor_socket", executor.socket, "--credential_file", str(credential),
         "--docker_socket", str(tmp_path / "docker.sock"), "--log_path", str(tmp_path / "log")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        host = type("Host", (), {"plugin_socket": str(tmp_path / f"{driver}.sock")})()
        deadline = time.monotonic() + 20
        while not os.path.exists(host.plugin_socket) and time.monotonic() < deadline:
            time.sleep(0.05)
        status, _, body = post(host, "/VolumeDriver.Remove", b'{"Name": "v1"}')
        assert (status, json.loads(body)["Err"]) == (
            500, "Plugin initialization in progress. Cannot remove volume=v1")
        assert "Refcounting failed" in (tmp_path / "log").read_text()
    finally:
        plugin.terminate()
        plugin.wait(timeout=30)
