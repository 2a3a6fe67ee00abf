"""Docker hosts: a private ``dockerd`` per host (``Dockerd``, which a swarm's
node is too), a local busybox image, and for the end-to-end tests the
vsphere plugin of the host (``DockerHost``), which talks to the test's
vmdk-opsd with the credential of the host's VM; a private registry, and the
managed plugins built into it. Everything is stopped by pid afterwards."""

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

from plugin.refcount import READY

from . import REPO, wait
from .executor import stop_process

_names = itertools.count(1)


def docker_client():
    """Debian's own client first: it matches its daemon."""
    for path in ("/usr/bin/docker", shutil.which("docker")):
        if path and os.path.exists(path):
            return path
    return None


def busybox_tar(folder):
    """A tarball of a rootfs with a static busybox and one link per applet."""
    target = os.path.join(folder, "busybox-rootfs.tar")
    if os.path.exists(target):
        return target
    rootfs = os.path.join(folder, "rootfs")
    os.makedirs(os.path.join(rootfs, "bin"))
    os.makedirs(os.path.join(rootfs, "etc"))
    shutil.copy("/bin/busybox", os.path.join(rootfs, "bin", "busybox"))
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with tarfile.open(target, "w") as tar:
        tar.add(rootfs, arcname=".")
    return target


class Registry:
    """A private registry (Debian's docker-registry) at ``address`` (host:port),
    in the network namespace ``netns`` if one is given; stopped by pid."""

    def __init__(self, folder, address, netns=None):
        self.address = address
        config = os.path.join(folder, "registry.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {folder}/storage\n"
                    f"http:\n  addr: {address}\nlog:\n  level: error\n")
        argv = [shutil.which("docker-registry"), "serve", config]
        if netns is not None:
            argv = ["ip", "netns", "exec", netns] + argv
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.netns = netns

    def wait(self):
        host, port = self.address.rsplit(":", 1)
        probe = ["bash", "-c", f"exec 3<>/dev/tcp/{host}/{port}"]
        if self.netns is not None:
            probe = ["ip", "netns", "exec", self.netns] + probe
        deadline = time.monotonic() + 30
        while subprocess.run(probe, capture_output=True).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not start at {self.address}")
            time.sleep(0.1)
        return self

    def stop(self):
        stop_process(self.process)


def build_plugin(docker_socket, driver, reference, *extra):
    """Build a managed plugin with the project's script on a dockerd, push
    it to its registry and remove it there: what a registry user installs."""
    built = subprocess.run([os.path.join(REPO, "scripts", "build-plugin.sh"), "--driver", driver,
                            "--tag", reference, "--push", *extra],
                           env=dict(os.environ, DOCKER_HOST=f"unix://{docker_socket}"),
                           capture_output=True, text=True, timeout=600)
    if built.returncode != 0 or f"pushed {reference}" not in built.stdout:
        raise RuntimeError(f"build-plugin.sh --driver {driver} failed: {built.stderr}")
    subprocess.run([docker_client(), "-H", f"unix://{docker_socket}", "plugin", "rm", "-f", reference],
                   check=True, capture_output=True)
    return built.stdout


def read(path):
    """A file's text, or "" when it is not there (yet)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def vsphere_argv(config, mount_root, plugin_dir, executor_socket, credential, docker_socket, log, *extra):
    """The vsphere plugin's command line, as a host starts it (a legacy plugin)."""
    return [sys.executable, "-m", "plugin.vsphere", "--config", config, "--mount_root", mount_root,
            "--socket_dir", plugin_dir, "--executor_socket", executor_socket, "--credential_file", credential,
            "--docker_socket", docker_socket, "--log_path", log, *extra]


class Dockerd:
    """What every Docker host of the rig is: a dockerd of its own (data and
    exec roots, socket, containerd namespaces named ``name``) in a mount
    namespace of its own where /run/docker/plugins shows only the host's
    plugin folder (Docker finds legacy plugins there and lists the volumes of
    each), and the docker command against it. A host says how its dockerd
    enters its namespaces (``wrap``), with which flags, on which storage drivers."""

    storage_drivers = ("overlay2", "vfs")
    start_timeout = 30
    flags = ()

    def __init__(self, folder, name):
        self.dir, self.name = folder, name
        self.socket = os.path.join(folder, "docker.sock")
        self.plugin_dir = os.path.join(folder, "plugins")
        self.dockerd = None

    def wrap(self, argv):
        return ["unshare", "--mount", "--propagation", "slave", "sh", "-c",
                'mkdir -p /run/docker/plugins && mount --bind "$0" /run/docker/plugins && exec "$@"',
                self.plugin_dir, *argv]

    def launch_dockerd(self, storage_driver=None):
        argv = ["dockerd", "--data-root", os.path.join(self.dir, "data"), "--exec-root", os.path.join(self.dir, "exec"),
                "-H", f"unix://{self.socket}", "--pidfile", os.path.join(self.dir, "docker.pid"),
                "--storage-driver", storage_driver or self.storage_drivers[0],
                "--containerd-namespace", self.name, "--containerd-plugins-namespace", f"{self.name}p", *self.flags]
        with open(os.path.join(self.dir, "dockerd.log"), "a") as out:
            self.dockerd = subprocess.Popen(self.wrap(argv), stdout=out, stderr=subprocess.STDOUT)

    def answers(self):
        return wait(lambda: self.docker("info", check=False).returncode == 0, self.start_timeout)

    def start_dockerd(self):
        for driver in self.storage_drivers:
            self.launch_dockerd(driver)
            if self.answers():
                return self
            self.stop_dockerd()
        raise RuntimeError(f"dockerd of {self.name} did not start; see {self.dir}/dockerd.log")

    def stop_dockerd(self, sig=signal.SIGTERM):
        stop_process(self.dockerd, sig, timeout=60)

    def docker_argv(self):
        """The docker command line of this host's daemon."""
        return [docker_client(), "-H", f"unix://{self.socket}"]

    def docker(self, *args, check=True, input_bytes=None, timeout=180):
        result = subprocess.run([*self.docker_argv(), *args], capture_output=True, input=input_bytes,
                                timeout=timeout)
        result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} on {self.name} failed: {result.stderr}")
        return result

    def run(self, volume_args, command, check=True, *extra):
        return self.docker("run", "--rm", "--network", "none", *extra, *volume_args, "local/busybox",
                           "sh", "-c", command, check=check)

    def import_busybox(self, workdir):
        self.docker("import", "-c", 'CMD ["/bin/sh"]', busybox_tar(workdir), "local/busybox")

    def install(self, reference, alias, sources, log, timeout=300):
        """A managed plugin from a registry, as users install it, with the
        host paths and values ``sources``; started once its ``log`` says so."""
        start = len(read(log))
        self.docker("plugin", "install", "--grant-all-permissions", "--alias", alias, reference, *sources,
                    "VDVS_LOG_LEVEL=debug", timeout=timeout)
        if not wait(lambda: READY in read(log)[start:], 120):
            raise RuntimeError(f"the {alias} plugin of {self.name} did not start: {read(log)[start:]}")

    def remove_containers(self):
        if self.dockerd is not None and self.dockerd.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)


class DockerHost(Dockerd):
    """One "Docker host VM": a dockerd and the vsphere plugin with this VM's
    credential, run beside it; the host's mount root is a shared mount, so what
    the plugin (outside) mounts there is seen by its dockerd (inside)."""

    flags = ("--iptables=false", "--ip6tables=false", "--bridge=none")

    def __init__(self, executor, vm_name):
        n = next(_names)
        # Short paths: containerd's sockets live under the exec root.
        self.driver = f"vmdkt{os.getpid()}h{n}"
        super().__init__(tempfile.mkdtemp(prefix=f"vmdkt-dh{n}-", dir="/tmp"), self.driver)
        self.executor = executor
        self.vm = vm_name
        self.mount_root = os.path.join(self.dir, "mnt")
        self.plugin_log = os.path.join(self.dir, "plugin.log")
        self.listed_driver = self.driver  # as `docker volume ls` shows it
        self.plugin = None

    def start_dockerd(self):
        if not os.path.isdir(self.mount_root):  # not when it boots again
            os.makedirs(self.plugin_dir)
            os.makedirs(self.mount_root)
            for argv in (["mount", "--bind", self.mount_root, self.mount_root],
                         ["mount", "--make-shared", self.mount_root]):
                subprocess.run(argv, check=True, capture_output=True)
        return super().start_dockerd()

    # -- the plugin ------------------------------------------------------------------

    def start_plugin(self):
        credential = self.executor.write_credential(self.vm, os.path.join(self.dir, "credential"))
        config = os.path.join(self.dir, "plugin.conf")
        with open(config, "w") as f:
            f.write('{"LogLevel": "debug"}\n')
        argv = vsphere_argv(config, self.mount_root, self.plugin_dir, self.executor.socket, credential, self.socket,
                            self.plugin_log, "--driver", self.driver)
        start = len(self.read_log())
        self.plugin = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if not wait(lambda: READY in self.read_log()[start:], 30):
            raise RuntimeError(f"the plugin did not start: {self.read_log()}")
        return self

    def install_plugin(self, reference, alias="vsphere", config=True):
        """The managed plugin from a registry, as users install it, with this
        VM's credential and the host's executor; its log in this host's folder;
        its config folder this host's own, or (``config=False``) the default."""
        self.credential = self.executor.write_credential(self.vm, os.path.join(self.dir, "credential"))
        self.settings, self.logs = os.path.join(self.dir, "etc"), os.path.join(self.dir, "log")
        os.makedirs(self.settings, exist_ok=True)
        os.makedirs(self.logs, exist_ok=True)
        self.plugin_log = os.path.join(self.logs, "vsphere-storage-for-docker.log")
        sources = [f"executor.source={os.path.dirname(self.executor.socket)}", f"credential.source={self.credential}",
                   f"log.source={self.logs}", f"docker.source={self.socket}"]
        if config:
            sources.append(f"config.source={self.settings}")
        self.install(reference, alias, sources, self.plugin_log)
        self.driver, self.listed_driver = alias, f"{alias}:latest"
        return self

    @property
    def plugin_socket(self):
        return os.path.join(self.plugin_dir, f"{self.driver}.sock")

    def stop_plugin(self, sig=signal.SIGTERM):
        stop_process(self.plugin, sig)

    def read_log(self):
        return read(self.plugin_log)

    def log_has(self, text):
        return text in self.read_log()

    def mounted(self):
        """Mount targets under this plugin's mount root (not the root itself)."""
        with open("/proc/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(self.mount_root + "/")]

    def die(self):
        """The VM dies at once: its plugin, dockerd, containerd and containers
        are killed (no Unmount reaches the plugin), and its kernel's mounts go
        with it. ``start_dockerd`` and ``start_plugin`` boot it again."""
        containers = [int(self.docker("inspect", "-f", "{{.State.Pid}}", c).stdout)
                      for c in self.docker("ps", "-q").stdout.split()]
        self.plugin.kill()
        self.plugin.wait()
        namespace = os.readlink(f"/proc/{self.dockerd.pid}/ns/mnt")
        assert namespace != os.readlink("/proc/self/ns/mnt"), "dockerd has no mount namespace of its own"
        for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/ns/mnt") == namespace:
                    os.kill(int(pid), signal.SIGKILL)
        for pid in containers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self.dockerd.wait()
        for target in self.mounted():
            subprocess.run(["umount", "-l", target], check=True, capture_output=True)

    def stop(self):
        """Stop containers, the daemon and the plugin; unmount what is left under the mount root."""
        self.remove_containers()
        self.stop_dockerd()
        self.stop_plugin()
        for target in self.mounted() + [self.mount_root]:
            subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
