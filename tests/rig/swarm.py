"""A Docker Swarm of several nodes on one machine, for the shared-volume
tests (spec test-environment "A Docker Swarm of several nodes"): each node
is a network namespace (10.99.0.N on a bridge in a hub namespace) with its
own dockerd in a mount namespace of its own, where the node's plugins run:
the vsphere plugin (a "VM" of the test's vmdk-opsd) and the vfile plugin.
With ``managed``, both plugins are managed plugins instead, built on the
first node, pushed to a private registry on the hub's bridge and installed
on every node from there. Everything is stopped by pid and the namespaces
removed afterwards."""

import concurrent.futures
import contextlib
import http.client
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

from plugin.refcount import READY

from . import REPO, inventory, wait
from .docker import Dockerd, Registry, build_plugin, read, vsphere_argv
from .executor import Executor, release_loops, stop_process

SUBNET = "10.99.0"  # on each swarm's own bridge
REGISTRY = f"{SUBNET}.254:5000"  # the registry of a swarm of managed plugins, on the hub
_swarms = itertools.count()
# Enter the node's network namespace, and a mount namespace of its own that
# keeps the cgroup mounts (without them dockerd cannot start containers).
WRAPPER = r'''
T=$(mktemp -d); mount --rbind /sys/fs/cgroup $T; umount -l /sys; mount -t sysfs sysfs /sys
mount --rbind $T /sys/fs/cgroup; umount -l $T; rmdir $T
mkdir -p /run/docker/plugins && mount --bind "$0" /run/docker/plugins
exec "$@"'''


def run(argv, check=True, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=kwargs.pop("timeout", 120), **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


class Node(Dockerd):
    """A Docker host in a network namespace of its own, VM ``vm`` of the
    swarm's executor, with its plugins run in its namespaces."""

    storage_drivers = ("overlay2",)
    start_timeout = 60

    def __init__(self, swarm, n, vm):
        super().__init__(os.path.join(swarm.dir, f"n{n}"), f"{swarm.prefix}n{n}")
        self.swarm, self.n, self.vm = swarm, n, vm
        self.address = f"{SUBNET}.{n}"
        self.flags = ("--cgroup-parent", self.name, "--insecure-registry", REGISTRY)
        self.vmdk_root = os.path.join(self.dir, "mnt", "vmdk")
        self.vfile_root = os.path.join(self.dir, "mnt", "vfile")
        self.state_dir = os.path.join(self.dir, "vfile")
        self.vsphere = self.vfile = None

    # -- the node -----------------------------------------------------------------------

    def start(self):
        for folder in (self.plugin_dir, self.vmdk_root, self.vfile_root, self.state_dir):
            os.makedirs(folder)
        run(["ip", "netns", "add", self.name])
        run(["ip", "link", "add", f"{self.name}h", "netns", self.swarm.hub, "type", "veth", "peer", "name",
             "eth0", "netns", self.name])
        run(["ip", "-n", self.swarm.hub, "link", "set", f"{self.name}h", "master", "br0", "up"])
        run(["ip", "-n", self.name, "addr", "add", f"{self.address}/24", "dev", "eth0"])
        run(["ip", "-n", self.name, "link", "set", "eth0", "up"])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])
        return self.start_dockerd()

    def wrap(self, argv):
        return ["nsenter", f"--net=/run/netns/{self.name}", "unshare", "--mount", "--propagation", "slave",
                "bash", "-c", WRAPPER, self.plugin_dir, *argv]

    def launch_dockerd(self, storage_driver=None):
        super().launch_dockerd(storage_driver)
        # Once the wrapper has made the node's mounts and become dockerd, what
        # enters its namespaces (``inside``) is on the node.
        wait(lambda: read(f"/proc/{self.dockerd.pid}/comm").strip() == "dockerd", 10, 0.01)

    def inside(self, argv):
        """``argv`` run in this node's network and mount namespaces."""
        return ["nsenter", "-t", str(self.dockerd.pid), "-m", "-n", "--"] + argv

    def etcdctl(self, *args):
        """etcdctl (API 3) against this manager's etcd member, with the node's
        swarm certificate as its plugin copied it (a manager's certificate
        names no address: the server's name is not checked here)."""
        tls = os.path.join(self.state_dir, "tls")
        return run(self.inside(["etcdctl", f"--endpoints=https://{self.address}:2379", "--cacert",
                                f"{tls}/node.ca", "--cert", f"{tls}/node.crt", "--key", f"{tls}/node.key",
                                "--insecure-skip-tls-verify", *args]),
                   env=dict(os.environ, ETCDCTL_API="3"), check=False)

    # -- its plugins --------------------------------------------------------------------

    def start_plugins(self):
        if self.swarm.managed:
            self.install_plugins()
            return
        self.start_vsphere()
        self.start_vfile()

    def install_plugins(self):
        """The managed plugins from the swarm's registry, as users install them;
        their logs and config files in this node's folder."""
        credential = self.swarm.executor.write_credential(self.vm, os.path.join(self.dir, "credential"))
        settings = os.path.join(self.dir, "etc")
        os.makedirs(settings, exist_ok=True)
        common = [f"config.source={settings}", f"log.source={self.dir}", f"docker.source={self.socket}"]
        for alias, extra in (
                ("vsphere", [f"executor.source={os.path.dirname(self.swarm.executor.socket)}",
                             f"credential.source={credential}"]),
                ("vfile", [f"state.source={self.state_dir}", "VFILE_MOUNT_METHOD=smbnetfs",
                           f"swarm.source={os.path.join(self.dir, 'data', 'swarm')}",
                           f"VFILE_TIMEOUT_IN_SECOND={self.swarm.service_timeout}",
                           f"VFILE_DEAD_NODE_GRACE={self.swarm.dead_node_grace}"])):
            log = os.path.join(self.dir, f"{alias}.log" if alias == "vfile" else "vsphere-storage-for-docker.log")
            self.install(f"{REGISTRY}/{self.swarm.references[alias]}", alias, [*common, *extra], log, timeout=600)

    def start_vsphere(self):
        credential = self.swarm.executor.write_credential(self.vm, os.path.join(self.dir, "credential"))
        log = os.path.join(self.dir, "vsphere.log")
        self.vsphere = self._start(vsphere_argv(os.path.join(self.dir, "none.conf"), self.vmdk_root, self.plugin_dir,
                                                self.swarm.executor.socket, credential, self.socket, log,
                                                "--log_level", "debug"), log)

    def start_vfile(self, ready=READY, **settings):
        config = os.path.join(self.dir, "vfile.conf")
        with open(config, "w") as f:
            json.dump(dict({"LogLevel": "debug", "MountMethod": "smbnetfs"}, **settings), f)
        log = os.path.join(self.dir, "vfile.log")
        argv = [sys.executable, "-m", "plugin.vfile", "--config", config,
                "--mount_root", self.vfile_root, "--socket_dir", self.plugin_dir,
                "--docker_socket", self.socket, "--log_path", log,
                "--state_dir", self.state_dir, "--samba_image_tar", self.swarm.samba_tar,
                "--service_timeout", str(self.swarm.service_timeout),
                "--dead_node_grace", str(self.swarm.dead_node_grace)]
        try:
            self.vfile = self._start(argv, log, ready, 120)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}{self.swarm.etcd_logs()}") from None

    def _start(self, argv, log, ready=READY, timeout=60):
        start = len(self.read(log))
        env = dict(os.environ, PYTHONPATH=REPO)
        process = subprocess.Popen(self.inside(argv), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                   stderr=open(log + ".err", "a"))
        if not wait(lambda: ready in self.read(log)[start:] or process.poll() is not None, timeout):
            raise RuntimeError(f"a plugin of {self.name} did not start: {self.read(log)[start:]}")
        if process.poll() is not None:
            raise RuntimeError(f"a plugin of {self.name} exited: {self.read(log + '.err')}")
        return process

    read = staticmethod(read)

    def vfile_log(self):
        return self.read(os.path.join(self.dir, "vfile.log"))

    def share_mounts(self):
        """This node's mounts of shared volumes (and of smbnetfs under them)."""
        return [m for m in self.fuse_mounts() if m.startswith((self.vfile_root + "/", self.state_dir + "/"))]

    def vmdk_mounts(self):
        """This node's mounts of vsphere volumes."""
        return [m for m in self.fuse_mounts() if m.startswith(self.vmdk_root + "/")]

    def fuse_mounts(self):
        """Mount points of this node's FUSE and bind mounts under its dir."""
        with open(f"/proc/{self.dockerd.pid}/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(self.dir + "/")]

    # -- a VM that dies, and comes back --------------------------------------------------

    def cut(self, cut=True):
        """The node's link to the others goes down (``cut=False``: up again);
        its processes live on."""
        run(["ip", "-n", self.swarm.hub, "link", "set", f"{self.name}h", "down" if cut else "up"])

    def kill(self):
        """The node dies at once: its network is cut (no answer, not even a
        reset) and every process of it is killed: dockerd, containerd, the
        containers, the plugins, etcd, smbnetfs, the relays."""
        run(["ip", "-n", self.swarm.hub, "link", "set", f"{self.name}h", "down"])
        pids = set(run(["ip", "netns", "pids", self.name], check=False).stdout.split())
        # The node's cgroup and those below it: its containers' (their own
        # network namespaces hide them from the node's).
        for root, _, files in os.walk("/sys/fs/cgroup"):
            parts = os.path.relpath(root, "/sys/fs/cgroup").split(os.sep)
            if any(part.startswith(self.name) for part in parts) and "cgroup.procs" in files:
                with open(os.path.join(root, "cgroup.procs")) as f:
                    pids.update(f.read().split())
        pids.update(self._session_pids())
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for process in (self.dockerd, self.vsphere, self.vfile):
            if process is not None:
                process.wait(timeout=30)

    def _session_pids(self):
        """smbnetfs, etcd and the relays: processes of sessions of their own
        (a managed plugin's run in its container and end with it: the pids
        in its files are not ours)."""
        pids = []
        if self.swarm.managed:
            return pids
        for path, _, files in os.walk(self.state_dir):
            if "pid" in files or "etcd.pid" in files:
                for name in ("pid", "etcd.pid"):
                    try:
                        with open(os.path.join(path, name)) as f:
                            pids.append(f.read().strip())
                    except OSError:
                        pass
        return pids

    def revive(self):
        """The node boots again: its network, dockerd (which rejoins the swarm)
        and its plugins, started together as a host's services are: dockerd
        asks the plugins about its containers' volumes while it starts."""
        run(["ip", "-n", self.swarm.hub, "link", "set", f"{self.name}h", "up"])
        self.launch_dockerd()
        if not self.swarm.managed:  # managed plugins start with dockerd
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                for started in [pool.submit(self.start_vsphere), pool.submit(self.start_vfile)]:
                    started.result()
        if not self.answers():
            raise RuntimeError(f"dockerd of {self.name} did not start; see {self.dir}/dockerd.log")

    def stop(self):
        self.remove_containers()
        for process in (self.vfile, self.vsphere):
            stop_process(process, signal.SIGTERM, timeout=30)
        if self.dockerd is not None and self.dockerd.poll() is None:
            for target in reversed(self.fuse_mounts()):
                run(self.inside(["umount", "-l", target]), check=False)
        for pid in self._session_pids():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        self.stop_dockerd()
        run(["ip", "netns", "del", self.name], check=False)


class Swarm:
    """``size`` nodes; the first ``managers`` are managers. Node n is VM n."""

    def __init__(self, executor, vms, samba_tar, busybox_dir, managers=1, service_timeout=45, managed=False,
                 dead_node_grace=60):
        self.executor = executor
        self.managed = managed
        self.registry = None
        self.references = {"vsphere": "vsphere-storage-for-docker:test", "vfile": "vfile:test"}
        self.samba_tar = samba_tar
        self.busybox_dir = busybox_dir
        self.service_timeout = service_timeout
        self.dead_node_grace = dead_node_grace
        self.prefix = f"vf{os.getpid() % 100000}{chr(ord('a') + next(_swarms))}"  # two swarms may run at once
        self.hub = f"{self.prefix}hub"
        self.dir = tempfile.mkdtemp(prefix="vfswarm-", dir="/tmp")
        self.nodes = [Node(self, n, vm) for n, vm in enumerate(vms, 1)]
        self.managers = managers

    def start(self):
        run(["ip", "netns", "add", self.hub])
        run(["ip", "-n", self.hub, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.hub, "link", "set", "br0", "up"])
        if self.managed:
            run(["ip", "-n", self.hub, "addr", "add", f"{REGISTRY.split(':')[0]}/24", "dev", "br0"])
            run(["ip", "-n", self.hub, "link", "set", "lo", "up"])
            self.registry = Registry(self.dir, REGISTRY, self.hub).wait()
        for node in self.nodes:
            node.start()
        # One image, saved and loaded everywhere, so that its ID is the same
        # on every node (a service names it by ID: no registry is asked).
        first = self.nodes[0]
        first.import_busybox(self.busybox_dir)
        saved = os.path.join(self.dir, "busybox-image.tar")
        first.docker("save", "-o", saved, "local/busybox")
        for node in self.nodes[1:]:
            node.docker("load", "-i", saved)
        first.docker("swarm", "init", "--advertise-addr", first.address)
        tokens = {role: first.docker("swarm", "join-token", "-q", role).stdout.strip()
                  for role in ("manager", "worker")}
        for i, node in enumerate(self.nodes[1:], 1):
            role = "manager" if i < self.managers else "worker"
            node.docker("swarm", "join", "--advertise-addr", node.address, "--token", tokens[role],
                        f"{first.address}:2377")
        if self.managed:
            build_plugin(first.socket, "vsphere", f"{REGISTRY}/{self.references['vsphere']}")
            build_plugin(first.socket, "vfile", f"{REGISTRY}/{self.references['vfile']}",
                         "--samba-image", self.samba_tar)
        # The leader's first (its plugin starts etcd, which the others join), then the others at once.
        first.start_plugins()
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for started in [pool.submit(node.start_plugins) for node in self.nodes[1:]]:
                started.result()
        self.wait_for_plugins_known()
        return self

    def etcd_logs(self, size=2000):
        """The end of each node's etcd log and vfile log, for a failure's message."""
        return "".join(f"\n-- {node.name}: etcd.log:\n"
                       f"{node.read(os.path.join(node.state_dir, 'etcd.log'))[-size:]}"
                       f"\n-- {node.name}: vfile.log:\n{node.vfile_log()[-size:]}" for node in self.nodes)

    @contextlib.contextmanager
    def outsider(self):
        """A host on the swarm's network that is no node of it (a network
        namespace on its bridge): what runs there is given as ``inside(argv)``."""
        name, address = f"{self.prefix}out", f"{SUBNET}.200"
        run(["ip", "netns", "add", name])
        try:
            run(["ip", "link", "add", f"{name}h", "netns", self.hub, "type", "veth", "peer", "name", "eth0",
                 "netns", name])
            run(["ip", "-n", self.hub, "link", "set", f"{name}h", "master", "br0", "up"])
            run(["ip", "-n", name, "addr", "add", f"{address}/24", "dev", "eth0"])
            run(["ip", "-n", name, "link", "set", "eth0", "up"])
            run(["ip", "-n", name, "link", "set", "lo", "up"])
            yield lambda argv: ["ip", "netns", "exec", name] + argv
        finally:
            run(["ip", "netns", "del", name], check=False)

    def wait_for_plugins_known(self, timeout=90):
        """Until the managers know every node's volume plugins: a node's agent
        sends its new description (plugins included) up to 20 s after it
        changed, and the tasks given to it meanwhile wait for that."""
        def known():
            nodes = json.loads(self.nodes[0].docker("node", "inspect", *[
                n.docker("info", "-f", "{{.Swarm.NodeID}}").stdout.strip() for n in self.nodes]).stdout)
            return all({"vfile", "vsphere"} <= {p["Name"].removesuffix(":latest")
                                                for p in node["Description"]["Engine"].get("Plugins", [])
                                                if p["Type"] == "Volume"} for node in nodes)
        if not wait(known, timeout, 0.5):
            raise RuntimeError("the managers did not learn the nodes' volume plugins in time")

    def stop(self):
        for node in self.nodes:
            if node.dockerd is not None and node.dockerd.poll() is None:
                for service in node.docker("service", "ls", "-q", check=False).stdout.split() \
                        if node is self.nodes[0] else []:
                    node.docker("service", "rm", service, check=False)
        for node in reversed(self.nodes):
            if node.dockerd is not None and node.dockerd.poll() is None:
                node.docker("swarm", "leave", "--force", check=False, timeout=60)
        for node in self.nodes:
            node.stop()
        if self.registry is not None:
            self.registry.stop()
        run(["ip", "netns", "del", self.hub], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- what the tests ask of a swarm -----------------------------------------------------

def status(node, volume):
    return json.loads(node.docker("volume", "inspect", volume).stdout)[0]["Status"]


def volumes(node, driver="vfile"):
    """The volumes of a driver (a managed plugin's are ``<driver>:latest``)."""
    listed = node.docker("volume", "ls", "--format", "{{.Name}} {{.Driver}}").stdout.split("\n")
    return {line.split()[0] for line in listed if line and line.split()[1].removesuffix(":latest") == driver}


def etcd_keys(swarm, volume):
    """The etcd keys that name a volume, read on the manager."""
    answer = swarm.nodes[0].etcdctl("get", "--prefix", "--keys-only", "SVOLS_")
    assert answer.returncode == 0, answer.stderr
    out = answer.stdout.split()
    return [key for key in out if key.rpartition("_")[2] == volume
            or key.startswith((f"SVOLS_client_{volume}_", f"SVOLS_mount_{volume}_"))
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
    class Unix(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(socket_path or os.path.join(node.plugin_dir, "vfile.sock"))

    connection = Unix("localhost", timeout=120)
    connection.request("POST", f"/VolumeDriver.{endpoint}", body=json.dumps(body).encode())
    answer = json.loads(connection.getresponse().read())
    connection.close()
    return answer


def start_swarm(work, samba_tar, busybox_dir, vms=("VM1", "VM2", "VM3"), managers=1, **settings):
    """A vmdk-opsd on the local backend (a datastore DS1, the VMs, a config
    DB) and a swarm whose node n is VM n, with their plugins; everything
    under the folder ``work``. ``stop_swarm`` stops it all."""
    from click.testing import CliRunner

    from vmdkops_admin.cli import cli

    home, datastore = os.path.join(work, "home"), os.path.join(work, "ds1")
    os.makedirs(home)
    inventory(home, {"DS1": datastore}, {vm: "DS1" for vm in vms})
    executor = Executor(home)
    swarm = Swarm(executor, list(vms), samba_tar, busybox_dir, managers, **settings)
    swarm.home, swarm.datastore = home, datastore
    try:
        result = CliRunner().invoke(cli, ["config", "init", "--local"], env={"VMDKOPS_HOME": home})
        assert result.exit_code == 0, result.output
        executor.start()
        swarm.start()
    except BaseException:
        stop_swarm(swarm)
        raise
    return swarm


def stop_swarm(swarm):
    swarm.stop()
    swarm.executor.stop()
    release_loops(swarm.home)


def build_samba_image(target):
    """The file server image's tarball, made by the project's script."""
    script = os.path.join(REPO, "scripts", "build-vfile-smb-image.sh")
    subprocess.run([script, "--out", target], check=True, capture_output=True, timeout=600)
    return target
