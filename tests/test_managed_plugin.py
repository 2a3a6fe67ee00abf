"""The vsphere plugin as a Docker managed (v2) plugin, installed as users
install it: built by scripts/build-plugin.sh, pushed to a private registry
(Debian's docker-registry on a loopback port), removed, then installed from
the registry with an alias and the host paths it needs, on a private
dockerd, against a real vmdk-opsd."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import missing
from executor import REPO

ALIAS = "vsphere"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry(tmp_path):
    """A private registry on a loopback port (stopped by pid afterwards)."""
    binary = shutil.which("docker-registry")
    if binary is None:
        missing("a Docker registry (Debian package docker-registry; scripts/test.sh installs it)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'storage'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n")
    process = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("docker-registry did not start")
            time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture
def managed(executor, busybox_dir, registry, tmp_path):
    """A dockerd with the plugin installed from the registry as ``vsphere``."""
    from docker_env import DockerHost, docker_client

    if shutil.which("dockerd") is None or docker_client() is None:
        missing("dockerd (Debian package docker.io; scripts/test.sh installs it)")
    host = DockerHost(executor, "VM1")
    host.start_dockerd()
    try:
        host.import_busybox(busybox_dir)
        reference = f"{registry}/vsphere-storage-for-docker:test"
        built = subprocess.run([os.path.join(REPO, "scripts", "build-plugin.sh"), "--tag", reference,
                                "--push"], env=dict(os.environ, DOCKER_HOST=f"unix://{host.socket}"),
                               capture_output=True, text=True, timeout=600)
        assert built.returncode == 0, built.stderr
        assert f"pushed {reference}" in built.stdout
        host.docker("plugin", "rm", "-f", reference)
        host.credential = tmp_path / "vm.credential"
        host.credential.write_text(executor.token("VM1"))
        host.settings = tmp_path / "etc"
        host.settings.mkdir()
        host.logs = tmp_path / "log"
        host.logs.mkdir()
        host.docker("plugin", "install", "--grant-all-permissions", "--alias", ALIAS, reference,
                    f"executor.source={os.path.dirname(executor.socket)}", f"credential.source={host.credential}",
                    f"config.source={host.settings}", f"log.source={host.logs}", f"docker.source={host.socket}")
        yield host
    finally:
        host.stop()


def plugin_log(host):
    with open(host.logs / "vsphere-storage-for-docker.log") as f:
        return f.read()


def plugin_pid(host):
    """The plugin's process: PID 1 of its container, as containerd records it."""
    plugin_id = host.docker("plugin", "inspect", "-f", "{{.Id}}", ALIAS).stdout.strip()
    [found] = glob.glob(os.path.join(host.dir, "exec", "containerd", "daemon", "*", "*", plugin_id, "init.pid"))
    with open(found) as f:
        return int(f.read())


def test_the_sanity_flow_of_the_original(managed, executor):
    """misc/scripts/plugin_sanity_test.sh: a volume, a file written by one
    container and read by another, the driver named by the alias."""
    host = managed
    assert host.docker("plugin", "inspect", "-f", "{{.Enabled}}", ALIAS).stdout.strip() == "true"
    host.docker("volume", "create", "-d", ALIAS, "-o", "size=100mb", "sanityvol")
    host.run(["-v", "sanityvol:/data"], "echo sane > /data/file")
    assert host.run(["-v", "sanityvol:/data"], "cat /data/file").stdout == "sane\n"
    assert host.docker("volume", "inspect", "-f", "{{.Driver}}", "sanityvol").stdout.strip() == f"{ALIAS}:latest"
    assert executor.ok("VM1", "get", "sanityvol")["status"] == "detached"
    host.docker("volume", "rm", "sanityvol")
    assert executor.ok("VM1", "list") == []
    host.docker("plugin", "disable", ALIAS)
    assert host.docker("plugin", "inspect", "-f", "{{.Enabled}}", ALIAS).stdout.strip() == "false"


def test_a_killed_plugin_keeps_the_volume_of_a_running_container(managed, executor):
    """Docker starts a managed plugin again when it dies; its recovery must
    know the volumes of containers that name its driver ``vsphere:latest``."""
    host = managed
    host.docker("volume", "create", "-d", ALIAS, "kept")
    writer = host.docker("run", "-d", "--network", "none", "-v", "kept:/data", "local/busybox", "sh", "-c",
                         "i=0; while true; do i=$((i+1)); echo $i > /data/n; sync; sleep 0.1; done").stdout.strip()
    time.sleep(1)
    first, starts = plugin_pid(host), plugin_log(host).count("Starting plugin")
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while plugin_log(host).count("Starting plugin") == starts or \
            "Refcounting successfully completed" not in plugin_log(host).split("Starting plugin")[-1]:
        assert time.monotonic() < deadline, plugin_log(host)
        time.sleep(0.2)
    assert plugin_pid(host) != first
    assert "Volume name=kept@DS1 count=1 mounted=true" in plugin_log(host).split("Starting plugin")[-1]
    before = int(host.docker("exec", writer, "cat", "/data/n").stdout)
    time.sleep(1)
    assert int(host.docker("exec", writer, "cat", "/data/n").stdout) > before
    assert executor.ok("VM1", "get", "kept")["status"] == "attached"
    host.docker("rm", "-f", writer)
    assert executor.ok("VM1", "get", "kept")["status"] == "detached"
    assert host.run(["-v", "kept:/data"], "cat /data/n").returncode == 0


def test_disable_with_volumes_and_set_while_disabled(managed):
    """Docker's rules: no disable while the plugin has volumes (without -f);
    ``plugin set`` only while disabled, taking effect at the next enable."""
    host = managed
    host.docker("volume", "create", "-d", ALIAS, "held")
    refused = host.docker("plugin", "disable", ALIAS, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr
    assert host.docker("plugin", "set", ALIAS, "VDVS_LOG_LEVEL=debug", check=False).returncode != 0
    host.docker("plugin", "disable", "-f", ALIAS)
    host.docker("plugin", "set", ALIAS, "VDVS_LOG_LEVEL=debug")
    host.docker("plugin", "enable", ALIAS)
    host.docker("volume", "inspect", "held")
    assert "log_level=debug" in plugin_log(host).split("Starting plugin")[-1]
    assert "[DEBUG]" in plugin_log(host).split("Starting plugin")[-1]
    host.docker("volume", "rm", "held")
