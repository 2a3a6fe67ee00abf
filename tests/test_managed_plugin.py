"""The vsphere plugin as a Docker managed (v2) plugin, installed as users
install it: built by scripts/build-plugin.sh, pushed to a private registry
(Debian's docker-registry on a loopback port), removed, then installed from
the registry with an alias and the host paths it needs, on a private
dockerd, against a real vmdk-opsd. (The scenarios of a Docker user run on
the managed plugin too: test_docker_e2e.py; shared volumes through managed
plugins on a swarm: test_vfile.py.)"""

import glob
import json
import os
import signal
import time

import pytest

from plugin.refcount import READY

ALIAS = "vsphere"
# Docker hosts with the plugin installed from the registry as ``vsphere``.
pytestmark = pytest.mark.parametrize("docker_host", ["managed"], indirect=True)


def plugin_pid(host):
    """The plugin's process: PID 1 of its container, as containerd records it."""
    plugin_id = host.docker("plugin", "inspect", "-f", "{{.Id}}", ALIAS).stdout.strip()
    [found] = glob.glob(os.path.join(host.dir, "exec", "containerd", "daemon", "*", "*", plugin_id, "init.pid"))
    with open(found) as f:
        return int(f.read())


def test_the_sanity_flow_of_the_original(docker_host, executor):
    """misc/scripts/plugin_sanity_test.sh: a volume, a file written by one
    container and read by another, the driver named by the alias."""
    host = docker_host()
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


def test_a_killed_plugin_keeps_the_volume_of_a_running_container(docker_host, executor):
    """Docker starts a managed plugin again when it dies; its recovery must
    know the volumes of containers that name its driver ``vsphere:latest``."""
    host = docker_host()
    host.docker("volume", "create", "-d", ALIAS, "kept")
    writer = host.docker("run", "-d", "--network", "none", "-v", "kept:/data", "local/busybox", "sh", "-c",
                         "i=0; while true; do i=$((i+1)); echo $i > /data/n; sync; sleep 0.1; done").stdout.strip()
    time.sleep(1)
    first, starts = plugin_pid(host), host.read_log().count("Starting plugin")
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while host.read_log().count("Starting plugin") == starts or \
            READY not in host.read_log().split("Starting plugin")[-1]:
        assert time.monotonic() < deadline, host.read_log()
        time.sleep(0.2)
    assert plugin_pid(host) != first
    assert "Volume name=kept@DS1 count=1 mounted=true" in host.read_log().split("Starting plugin")[-1]
    before = int(host.docker("exec", writer, "cat", "/data/n").stdout)
    time.sleep(1)
    assert int(host.docker("exec", writer, "cat", "/data/n").stdout) > before
    assert executor.ok("VM1", "get", "kept")["status"] == "attached"
    host.docker("rm", "-f", writer)
    assert executor.ok("VM1", "get", "kept")["status"] == "detached"
    assert host.run(["-v", "kept:/data"], "cat /data/n").returncode == 0


def test_disable_with_volumes_and_set_while_disabled(docker_host):
    """Docker's rules: no disable while the plugin has volumes (without -f);
    ``plugin set`` only while disabled, taking effect at the next enable."""
    host = docker_host()
    host.docker("volume", "create", "-d", ALIAS, "held")
    refused = host.docker("plugin", "disable", ALIAS, check=False)
    assert refused.returncode != 0 and "in use" in refused.stderr
    assert host.docker("plugin", "set", ALIAS, "VDVS_LOG_LEVEL=debug", check=False).returncode != 0
    host.docker("plugin", "disable", "-f", ALIAS)
    host.docker("plugin", "set", ALIAS, "VDVS_LOG_LEVEL=debug")
    host.docker("plugin", "enable", ALIAS)
    host.docker("volume", "inspect", "held")
    assert "log_level=debug" in host.read_log().split("Starting plugin")[-1]
    assert "[DEBUG]" in host.read_log().split("Starting plugin")[-1]
    host.docker("volume", "rm", "held")


def test_an_install_without_a_config_folder_starts(docker_host, vsphere_plugin):
    """A fresh host has no /etc/vmdkops: an install naming no config.source
    reads the host's /etc (where the legacy plugin's
    vsphere-storage-for-docker.conf lives, read-only) and starts. The test
    host still names its log folder and its dockerd's socket, which a real
    host has at the defaults."""
    host = docker_host()
    host.docker("plugin", "disable", ALIAS)
    host.docker("plugin", "rm", ALIAS)
    host.install_plugin(vsphere_plugin, config=False)
    mounts = host.docker("plugin", "inspect", "-f", "{{json .Settings.Mounts}}", ALIAS).stdout
    assert {"Source": "/etc", "Destination": "/etc/vmdkops"}.items() <= \
        next(m for m in json.loads(mounts) if m["Name"] == "config").items()
    host.docker("volume", "create", "-d", ALIAS, "fresh")
    assert host.run(["-v", "fresh:/data"], "echo ok > /data/f && cat /data/f").stdout == "ok\n"
    host.docker("volume", "rm", "fresh")
