"""The plugin's parts that need no Docker: standard library only, its
configuration, the ESX device computation over a fake /sys, the executor
client's retries, /proc/mounts parsing, and a disk taken from a guest while
mounted there."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from plugin import config as configuration
from plugin.vsphere.client import Client, ExecutorError
from plugin.vsphere.devices import DeviceNotFound, EsxDevices, LocalDevices
from plugin.fs import label_for, mounted


def test_plugin_imports_only_the_standard_library():
    code = ("import sys\n"
            "before = set(sys.modules)\n"
            "import importlib, pkgutil, plugin\n"
            "for module in pkgutil.walk_packages(plugin.__path__, 'plugin.'):\n"
            "    if not module.name.endswith('__main__'):\n"
            "        importlib.import_module(module.name)\n"
            "added = {m.split('.')[0] for m in set(sys.modules) - before}\n"
            "print(sorted(added - set(sys.stdlib_module_names) - {'plugin'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_config_precedence_and_unknown_keys(tmp_path):
    path = tmp_path / "conf"
    path.write_text(json.dumps({"driver": "fromfile", "LogLevel": "debug", "GroupID": "docker",
                                "MaxLogSizeMb": 5, "Bogus": 1}))
    flags = configuration.parser().parse_args(["--driver", "fromflag"])
    config = configuration.load(str(path), environ={"VDVS_LOG_LEVEL": "warn", "VDVS_SOCKET_GID": "42"},
                                flags=flags)
    assert (config.Driver, config.LogLevel, config.GroupID, config.MaxLogSizeMb) == (
        "fromflag", "warn", "42", 5)
    assert config.warnings == ["Unknown key 'Bogus' in " + str(path) + " is ignored"]
    assert config.socket_path == "/run/docker/plugins/fromflag.sock"


def test_config_defaults_and_errors(tmp_path):
    config = configuration.load(str(tmp_path / "missing"), environ={})
    assert (config.Driver, config.MaxLogSizeMb, config.MaxLogAgeDays, config.MaxLogFiles,
            config.LogPath) == ("vsphere", 10, 28, 10, "/var/log/vsphere-storage-for-docker.log")
    (tmp_path / "bad").write_text("{not json")
    with pytest.raises(configuration.ConfigError, match="Failed to load config file"):
        configuration.load(str(tmp_path / "bad"), environ={})
    (tmp_path / "level").write_text('{"LogLevel": "chatty"}')
    with pytest.raises(configuration.ConfigError, match='not a valid level: "chatty"'):
        configuration.load(str(tmp_path / "level"), environ={})
    (tmp_path / "old").write_text('{"Driver": "vmdk"}')
    assert configuration.load(str(tmp_path / "old"), environ={}).Driver == "vsphere"


@pytest.fixture
def fake_sys(tmp_path):
    bridge = tmp_path / "sys" / "bus" / "pci" / "devices" / "0000:00:15.0" / "pci_bus"
    (bridge / "0000:03").mkdir(parents=True)
    (bridge / "0000:04").mkdir()
    return EsxDevices(str(tmp_path / "sys"), str(tmp_path / "dev"))


def test_esx_device_from_bus_and_unit(fake_sys, tmp_path):
    reply = {"Unit": "8", "ControllerPciSlotNumber": "160", "ControllerPciBusNumber": "15.0"}
    assert fake_sys.path(reply) == str(tmp_path / "dev/disk/by-path/pci-0000:03:00.0-scsi-0:0:8:0")


def test_esx_device_from_disk_uuid(fake_sys, tmp_path):
    reply = {"Unit": "0", "ControllerPciBusNumber": "15.0",
             "DiskUuid": "60 00 C2 9a 6e 4b 7f 3b-3d 3b 0a 2c 4e 1d 3c 5f"}
    assert fake_sys.path(reply) == str(tmp_path / "dev/disk/by-id/wwn-0x6000c29a6e4b7f3b3d3b0a2c4e1d3c5f")


@pytest.mark.parametrize("reply", [{"Unit": "0", "ControllerPciBusNumber": "99.0"}, {"Unit": "x"},
                                   {}, None, []])
def test_esx_device_not_found(fake_sys, reply):
    with pytest.raises(DeviceNotFound, match="Device not found"):
        fake_sys.path(reply)


def test_local_device():
    assert LocalDevices().path({"Device": "/dev/loop7"}) == "/dev/loop7"
    with pytest.raises(DeviceNotFound):
        LocalDevices().path({"Device": "../etc/passwd"})


def test_client_retries_transport_failures(tmp_path):
    credential = tmp_path / "credential"
    credential.write_text("token\n")
    config = configuration.Config(ExecutorSocket=str(tmp_path / "nosuch.sock"),
                                  CredentialFile=str(credential))
    sleeps = []
    with pytest.raises(ExecutorError) as caught:
        Client(config, sleep=sleeps.append).run("list")
    assert sleeps == [1] * 5
    assert str(caught.value).startswith("Run 'list' failed: No such file or directory (errno=2)")
    config.CredentialFile = str(tmp_path / "none")
    with pytest.raises(ExecutorError, match="No VM credential"):
        Client(config, sleep=sleeps.append).run("list")


def test_labels_fit_the_filesystem():
    assert label_for("a-very-long-volume-name", "xfs") == "a-very-long-"
    assert label_for("a-very-long-volume-name", "ext4") == "a-very-long-volu"


def test_proc_mounts_parsing(tmp_path):
    proc = tmp_path / "mounts"
    proc.write_text("/dev/loop3 /mnt/vmdk/v1@DS1 ext4 rw 0 0\n"
                    "/dev/loop4 /mnt/vmdk/with\\040space@DS1 xfs ro 0 0\n"
                    "/dev/loop5 /mnt/vmdk/deeper/v2 ext4 rw 0 0\n"
                    "/dev/sda1 / ext4 rw 0 0\n")
    assert mounted("/mnt/vmdk/", str(proc)) == {"v1@DS1": "/dev/loop3", "with space@DS1": "/dev/loop4"}


def test_vfile_config(tmp_path):
    path = tmp_path / "vfile.conf"
    path.write_text(json.dumps({"InternalDriver": "other", "mountmethod": "smbnetfs", "EtcdEndpoints": "http://a:1"}))
    flags = configuration.parser(configuration.VfileConfig).parse_args(["--service_timeout", "90"])
    config = configuration.load(str(path), environ={"VFILE_ETCD_CLIENT_PORT": "4001", "VFILE_TIMEOUT_IN_SECOND": "60"},
                                flags=flags, kind=configuration.VfileConfig)
    assert (config.Driver, config.InternalDriver, config.MountMethod, config.EtcdEndpoints, config.EtcdClientPort,
            config.EtcdPeerPort, config.ServiceTimeout, config.MountRoot, config.LogPath) == (
        "vfile", "other", "smbnetfs", "http://a:1", 4001, 2380, 90, "/mnt/vfile", "/var/log/vfile.log")
    assert config.socket_path == "/run/docker/plugins/vfile.sock"
    from plugin import __version__
    assert config.SambaImage == f"vmdkops/vfile-smb:{__version__}"
    defaults = configuration.load(str(tmp_path / "none"), environ={}, kind=configuration.VfileConfig)
    assert (defaults.InternalDriver, defaults.MountMethod, defaults.ServiceTimeout) == ("vsphere", "cifs", 45)
    for bad, message in (({"MountMethod": "nfs"}, "MountMethod must be 'cifs' or 'smbnetfs'"),
                         ({"Driver": "vsphere"}, "Unknown driver or invalid/missing driver options, exiting - vsphere"),
                         ({"ServiceTimeout": 0}, "ServiceTimeout must be a positive number"),
                         ({"EtcdEndpoints": "a:1"}, "EtcdEndpoints over TLS need EtcdCA, EtcdCert and EtcdKey"),
                         ({"EtcdEndpoints": "https://a:1,http://b:1"}, "EtcdEndpoints must all be https"),
                         ({"EtcdEndpoints": "ftp://a:1"}, "EtcdEndpoints must all be https")):
        path.write_text(json.dumps(bad))
        with pytest.raises(configuration.ConfigError, match=message):
            configuration.load(str(path), environ={}, kind=configuration.VfileConfig)


def test_both_programs_document_every_setting():
    for program, keys in (("vfile", ["InternalDriver", "EtcdEndpoints", "EtcdCA", "EtcdCert", "EtcdKey",
                                     "SwarmCertificates", "EtcdClientPort", "EtcdPeerPort",
                                     "MountMethod", "ServiceTimeout", "DockerSocket", "LogPath",
                                     "VFILE_TIMEOUT_IN_SECOND", "VFILE_ETCD_CLIENT_PORT", "--etcd_endpoints",
                                     "--mount_method", "--InternalDriver", "/etc/vfile.conf"]),
                          ("vsphere-storage-for-docker", ["ExecutorSocket", "CredentialFile", "--executor_socket",
                                                          "/etc/vsphere-storage-for-docker.conf"])):
        script = os.path.join(os.path.dirname(sys.executable), program)
        out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())
        assert all(key in text for key in keys), [key for key in keys if key not in text]


def test_the_plugins_and_the_admin_tools_are_one_release():
    from plugin import __version__ as plugin_version
    from vmdkops_admin import __version__

    assert plugin_version == __version__


def test_a_helper_is_known_by_its_command_line_not_its_pid_alone(tmp_path):
    """After a reboot, or in a restarted managed plugin's new container, a
    pid file's number can be any process: only the helper is stopped."""
    from plugin.vfile import pids

    pid_file = str(tmp_path / "pid")
    tree = str(tmp_path / "tree")
    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", tree])
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pids.write(pid_file, helper.pid)
        assert pids.running(pid_file, tree) == helper.pid
        pids.write(pid_file, other.pid)  # the number of an unrelated process
        assert pids.running(pid_file, tree) is None
        pids.stop(pid_file, tree, wait=5)
        assert other.poll() is None and not os.path.exists(pid_file)
        pids.write(pid_file, os.getpid())  # the plugin itself, PID 1 of its container
        assert pids.running(pid_file, sys.executable) is None
        pids.write(pid_file, helper.pid)
        pids.stop(pid_file, tree, wait=5)
        assert helper.wait(timeout=5) == -15 and not os.path.exists(pid_file)
    finally:
        for process in (helper, other):
            process.kill()
            process.wait()


@pytest.mark.parametrize("fstype", ["ext4", "xfs"])
def test_a_filesystem_smaller_than_its_device_is_seen(tmp_path, fstype):
    """Read from the superblock: a filesystem that fills its device is left
    alone at mount (no e2fsck, no xfs_growfs); one whose volume grew is not."""
    from rig import missing
    from plugin import fs

    if shutil.which(f"mkfs.{fstype}") is None:
        missing(f"mkfs.{fstype} (Debian packages e2fsprogs and xfsprogs)")
    image = str(tmp_path / "disk")
    with open(image, "wb") as f:
        f.truncate(400 << 20)
    made = subprocess.run([f"mkfs.{fstype}", "-q", image] if fstype == "xfs" else
                          ["mkfs.ext4", "-q", "-F", image], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert not fs.smaller_than_device(image, fstype)
    with open(image, "r+b") as f:
        f.truncate(900 << 20)
    assert fs.smaller_than_device(image, fstype)
    assert not fs.smaller_than_device(image, "btrfs")


SWARM_KEY = """-----BEGIN PRIVATE KEY-----
kek-version: 0
raft-dek: EiC97jvfXasv4GoYN6c/8jVLDV51r/9xIi9OQDi20ykcnw==

MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglKfAcmDf3d6ZrxZK
CWsa6JRuftpEpb4Qm58unKG5drShRANCAATLMAhPVXuiN+hpaWOWzD5G7AsPGiai
-----END PRIVATE KEY-----
"""


def test_the_swarm_key_is_copied_without_swarmkits_headers():
    """What OpenSSL needs, and nothing else: the raft data key stays behind."""
    from plugin.vfile.pki import SwarmLocked, key_without_headers

    stripped = key_without_headers(SWARM_KEY)
    assert stripped == ("-----BEGIN PRIVATE KEY-----\n"
                        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglKfAcmDf3d6ZrxZK\n"
                        "CWsa6JRuftpEpb4Qm58unKG5drShRANCAATLMAhPVXuiN+hpaWOWzD5G7AsPGiai\n"
                        "-----END PRIVATE KEY-----\n")
    locked = SWARM_KEY.replace("kek-version: 0\n", "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n"
                                                    "kek-version: 1\n")
    for text in (locked, SWARM_KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")):
        with pytest.raises(SwarmLocked, match="This swarm is locked .autolock."):
            key_without_headers(text)
    with pytest.raises(ValueError):
        key_without_headers("not a key")


class TakenOver:
    """The executor's answers to VM1's plugin about db@DS1, which VM2 takes
    over (``holder``): on vSphere the disk is hot-removed from a guest whose
    heartbeat was lost, which cannot run here."""

    def __init__(self, device):
        self.device, self.holder, self.calls = device, "VM1", []

    def run(self, cmd, name="", opts=None, timeout=120.0, retries=0):
        self.calls.append(cmd)
        if cmd == "get":
            return {"status": "attached", "datastore": "DS1", "fstype": "ext4", "access": "read-write",
                    "attached to VM": self.holder, "attached to this VM": self.holder == "VM1"}
        if cmd == "attach" and self.holder != "VM1":
            raise ExecutorError(f"Failed to attach volume {name}: it is attached to VM {self.holder}, whose "
                                "plugin reported 1 s ago (it is taken over after 30 s of silence)")
        return {"Device": self.device} if cmd == "attach" else None


def test_a_disk_taken_while_mounted_is_dropped_at_the_next_mount(tmp_path, caplog):
    """VM1's guest comes back after VM2 took its mounted disk: the next Mount
    (a real ext4 on a loop device) drops the dead mount and asks for the
    volume again, which is refused naming VM2, rather than giving a second
    container the dead disk; nothing counts it any more."""
    from rig.executor import require_root_and_loops
    from plugin.vsphere.driver import Driver
    from plugin.refcount import DriverError

    require_root_and_loops()
    image = tmp_path / "disk"
    image.write_bytes(b"\0" * (8 << 20))
    device = subprocess.run(["losetup", "-f", "--show", str(image)], capture_output=True, text=True,
                            check=True).stdout.strip()
    executor = TakenOver(device)
    driver = Driver(configuration.Config(MountRoot=str(tmp_path / "mnt")), executor, LocalDevices())
    driver.ready.set()
    try:
        subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True, capture_output=True)
        assert driver.mount("db@DS1", "first") == f"{tmp_path}/mnt/db@DS1/"
        assert driver.mount("db@DS1", "second") == f"{tmp_path}/mnt/db@DS1/"  # VM1's own: counted
        assert driver.counts == {"db@DS1": 2} and executor.calls.count("attach") == 1

        executor.holder = "VM2"
        with pytest.raises(DriverError, match="it is attached to VM VM2, whose plugin reported"):
            driver.mount("db@DS1", "third")
        assert "Volume db@DS1 was taken over by another VM while it was mounted here" in caplog.text
        assert mounted(str(tmp_path / "mnt")) == {} and driver.counts == {} and driver.mount_ids == {}
        assert executor.calls.count("attach") == 2
    finally:
        subprocess.run(["umount", "-R", "-l", str(tmp_path / "mnt")], capture_output=True)
        subprocess.run(["losetup", "--detach", device], capture_output=True)
