"""Fixtures: a state root per test, an inventory of datastores and VMs, the
admin CLI run in-process (and as a real process), and the config DB on SQLite
or on a private PostgreSQL cluster that this test session starts and stops.

A part that is missing here (PostgreSQL) skips its tests with a reason that
names it; in CI (CI=true) it fails them instead."""

import glob
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid

import pytest
from click.testing import CliRunner

from rig import missing

# -- sharing out the tests (pytest-xdist, --dist loadfile) ------------------------

# The modules on swarms of their own come first, the longest first: each starts
# on a worker of its own while the other workers run the rest, module by module.
FIRST = ("test_vfile_resilience.py", "test_vfile.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


# -- running the admin CLI -------------------------------------------------------

class Admin:
    """``admin("vmgroup ls")`` runs the CLI in-process; ``admin.ok`` and
    ``admin.err`` also check the exit code of a success or a failure."""

    def __call__(self, *args):
        from vmdkops_admin.cli import cli

        argv = shlex.split(args[0]) if len(args) == 1 and isinstance(args[0], str) else list(args)
        return CliRunner().invoke(cli, argv, prog_name="vmdkops_admin", catch_exceptions=False)

    def ok(self, *args):
        result = self(*args)
        assert result.exit_code == 0, (result.exit_code, result.output)
        return result.stdout

    def err(self, *args):
        """The text after ``ERROR:`` of a failed command."""
        result = self(*args)
        assert result.exit_code == 2, (result.exit_code, result.output)
        assert result.stdout.startswith("ERROR:"), result.output
        assert "Traceback" not in result.output
        return result.stdout[len("ERROR:"):].rstrip("\n")

    def proc(self, *args, env=None):
        """Run the installed console script as a real process."""
        script = shutil.which("vmdkops_admin", path=os.path.dirname(sys.executable))
        return subprocess.run([script, *args], capture_output=True, text=True,
                              env=env or os.environ.copy(), timeout=120)


@pytest.fixture
def admin():
    return Admin()


def parse_table(text):
    """Rows of a table as dicts, cut at the columns of the dash line."""
    lines = text.rstrip("\n").split("\n")
    spans, pos = [], 0
    for run in lines[1].split(" "):
        if run:
            spans.append((pos, pos + len(run)))
        pos += len(run) + 1
    cut = [(start, spans[i + 1][0] if i + 1 < len(spans) else None)
           for i, (start, _) in enumerate(spans)]
    headers = [lines[0][a:b].strip() for a, b in cut]
    return [{h: line[a:b].strip() for h, (a, b) in zip(headers, cut)} for line in lines[2:]]


# -- the state root and the inventory ----------------------------------------------

@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("VMDKOPS_HOME", str(root))
    return root


@pytest.fixture
def inventory(home, tmp_path):
    """Datastores DS1 and DS2 and VMs VM1 (on DS1), VM2 (on DS2) and VM3."""
    from rig import inventory as make

    return make(home, {name: tmp_path / name for name in ("DS1", "DS2")},
                {"VM1": "DS1", "VM2": "DS2", "VM3": "DS1"})


# -- PostgreSQL ----------------------------------------------------------------------

def _pg_bindir():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """A private PostgreSQL cluster for this test session; the base URL."""
    bindir = _pg_bindir()
    if bindir is None:
        missing("PostgreSQL server (Debian package postgresql; scripts/test.sh installs it)")
    base = tempfile.mkdtemp(prefix="vmdkops-pg-")
    as_user = []
    if os.geteuid() == 0:
        # initdb refuses to run as root.
        shutil.chown(base, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = os.path.join(base, "data"), _free_port()
    subprocess.run(as_user + [f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "postgres",
                              "--no-sync"], check=True, capture_output=True)
    options = (f"-k {base} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off "
               "-c full_page_writes=off -c synchronous_commit=off")
    subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", data, "-o", options,
                              "-l", os.path.join(base, "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(as_user + [f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server):
    """A new empty database on the private cluster, dropped after the test."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{pg_server}/{name}"
    with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_kind(request):
    return request.param


@pytest.fixture
def configured(request, db_kind, admin, inventory):
    """A config DB made by ``config init``: local SQLite, or a PostgreSQL URL."""
    if db_kind == "sqlite":
        admin.ok("config init --local")
    else:
        admin.ok("config", "init", "--db-url", request.getfixturevalue("pg_url"))
    return db_kind


# -- the executor -------------------------------------------------------------------

@pytest.fixture
def executor(home, inventory):
    """A running vmdk-opsd for this test's state root (stopped, and its loop
    devices released, afterwards)."""
    from rig.executor import Executor, release_loops, require_root_and_loops

    require_root_and_loops()
    running = Executor(home).start()
    yield running
    running.stop()
    release_loops(home)


# -- Docker hosts ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def busybox_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("busybox"))


def docker_parts():
    from rig.docker import docker_client

    if shutil.which("dockerd") is None or docker_client() is None:
        missing("dockerd (Debian package docker.io; scripts/test.sh installs it)")
    if not os.path.exists("/bin/busybox"):
        missing("busybox (Debian package busybox-static)")


@pytest.fixture
def docker_host(request, executor, busybox_dir):
    """A factory of Docker hosts (dockerd + plugin) acting as inventory VMs;
    parametrized "managed" (indirect), the plugin is the managed one,
    installed from the registry."""
    from rig.docker import DockerHost

    docker_parts()
    reference = request.getfixturevalue("vsphere_plugin") if getattr(request, "param", "") == "managed" else None
    hosts = []

    def make(vm_name="VM1"):
        host = DockerHost(executor, vm_name)
        hosts.append(host)
        host.start_dockerd()
        host.import_busybox(busybox_dir)
        if reference is None:
            host.start_plugin()
        else:
            host.install_plugin(reference)
        return host

    yield make
    for host in hosts:
        host.stop()


@pytest.fixture(scope="session")
def registry(tmp_path_factory, registry_parts):
    """A private registry on a loopback port (loopback registries need no daemon flag)."""
    from rig.docker import Registry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    running = Registry(str(tmp_path_factory.mktemp("registry")), f"127.0.0.1:{port}").wait()
    yield running.address
    running.stop()


@pytest.fixture(scope="session")
def vsphere_plugin(tmp_path_factory, registry):
    """The vsphere managed plugin, built by scripts/build-plugin.sh on a
    dockerd of its own and pushed to the registry: its reference there."""
    from rig.docker import DockerHost, build_plugin

    docker_parts()
    builder = DockerHost(None, "builder")
    try:
        builder.start_dockerd()
        reference = f"{registry}/vsphere-storage-for-docker:test"
        build_plugin(builder.socket, "vsphere", reference)
    finally:
        builder.stop()
    return reference


# -- the vSphere simulator ------------------------------------------------------------

@pytest.fixture(scope="session")
def vcsim_binary(tmp_path_factory):
    from rig import vcsim

    if not vcsim.available():
        missing("go and govmomi (Debian packages golang-go and golang-github-vmware-govmomi-dev)")
    return vcsim.build(str(tmp_path_factory.mktemp("vcsim")))


@pytest.fixture(scope="session")
def vcsim_servers(vcsim_binary):
    """mode ("vpx" or "esx") -> the URL of a running simulator; stopped at the end."""
    from rig import vcsim

    running = {}

    def server(mode):
        if mode not in running:
            running[mode] = vcsim.start(vcsim_binary, mode)
        return running[mode][1]

    yield server
    for process, _ in running.values():
        vcsim.stop(process)


@pytest.fixture
def vcsim_backend(vcsim_servers, tmp_path):
    """A vsphere backend on the simulator of a mode; a password file, as an admin would keep it."""
    from vmdkops_admin.backends.vsphere import VsphereBackend, load_settings

    def make(mode):
        url = vcsim_servers(mode)
        (tmp_path / "password").write_text("pass\n")
        (tmp_path / "vsphere.json").write_text(json.dumps({
            "host": url.hostname, "port": url.port, "user": "user",
            "password_file": str(tmp_path / "password"), "insecure": True}))
        return VsphereBackend(load_settings(str(tmp_path / "vsphere.json")))
    return make


# -- a Docker Swarm for the shared volumes ------------------------------------------------

@pytest.fixture(scope="session")
def samba_image(tmp_path_factory):
    """The file server image's tarball, built by the project's script."""
    from rig.swarm import build_samba_image

    if not os.path.exists("/usr/sbin/smbd"):
        missing("Samba (Debian package samba; scripts/test.sh installs it)")
    return build_samba_image(str(tmp_path_factory.mktemp("samba") / "vfile-smb.tar"))


@pytest.fixture(scope="session")
def registry_parts():
    """A registry can run here."""
    if shutil.which("docker-registry") is None:
        missing("a Docker registry (Debian package docker-registry; scripts/test.sh installs it)")


@pytest.fixture(scope="session")
def swarm_parts():
    """What a test swarm needs on this machine."""
    from rig.executor import require_root_and_loops

    require_root_and_loops()
    for program, part in (("dockerd", "dockerd (Debian package docker.io)"),
                          ("etcd", "etcd (Debian package etcd-server)"),
                          ("etcdctl", "etcdctl (Debian package etcd-client)"),
                          ("smbnetfs", "smbnetfs (Debian packages smbnetfs and fuse3)"),
                          ("nsenter", "nsenter (util-linux)"), ("ip", "ip (iproute2)")):
        if shutil.which(program) is None:
            missing(part)
    if not os.path.exists("/dev/fuse"):
        missing("FUSE (/dev/fuse)")


@pytest.fixture(scope="session")
def swarm(tmp_path_factory, samba_image, busybox_dir, swarm_parts):
    """Three nodes (node1 the manager, node2 and node3 workers) of one swarm,
    each a VM (VM1-VM3) of a vmdk-opsd on the local backend with a config DB,
    each with the vsphere and vfile plugins (smbnetfs mounts). One for the
    whole test session: each test removes what it made."""
    from rig.swarm import start_swarm, stop_swarm

    running = start_swarm(str(tmp_path_factory.mktemp("swarm")), samba_image, busybox_dir)
    try:
        yield running
    finally:
        stop_swarm(running)


@pytest.fixture(scope="module")
def managed_swarm(tmp_path_factory, samba_image, busybox_dir, swarm_parts, registry_parts):
    """The same swarm with managed plugins: built on node1 by
    scripts/build-plugin.sh, pushed to a private registry on the swarm's
    bridge and installed on every node from there (for one test module)."""
    from rig.swarm import start_swarm, stop_swarm

    running = start_swarm(str(tmp_path_factory.mktemp("managed-swarm")), samba_image, busybox_dir, managed=True)
    try:
        yield running
    finally:
        stop_swarm(running)


@pytest.fixture(params=["legacy", "managed"])
def each_swarm(request):
    """The test runs on the swarm of legacy plugins, then on that of managed ones."""
    return request.getfixturevalue("swarm" if request.param == "legacy" else "managed_swarm")
