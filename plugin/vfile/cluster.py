"""This node in the swarm, and the etcd cluster the vfile plugins keep their
state in (spec plugin §4.2). With ``EtcdEndpoints`` set, that existing
cluster is used as it is (over TLS unless the operator gives ``http://``).
Otherwise etcd runs on the swarm managers, started by their plugins from
Debian's ``etcd``: the leader's plugin starts a one-member cluster when no
other manager runs etcd, other managers join it (a stale member of the same
node or address is replaced), a restarted manager rejoins with its data, and
workers are clients of the managers.

That etcd speaks only mutual TLS with the swarm's own certificates
(``pki``): its clients must be nodes of this swarm now (they come through
the plugin's ``gate``; etcd listens on the loopback), its peers managers. A
manager's certificate names its node id, not its address, so a member's
peer URL is ``https://<node id>:<port>``, and etcd runs in a mount namespace
of its own whose ``/etc/hosts`` says where each node is (``etcd-hosts``
in the state directory, kept by the managers' plugins)."""

import base64
import json
import logging
import os
import shutil
import subprocess
import time
import urllib.parse

from ..docker_api import DockerError, filters
from . import pids
from .etcd import Etcd, EtcdError
from .gate import Gate
from .pki import MANAGER_NAME, ExternalTls, NodeIdentity, SwarmTls

log = logging.getLogger("vmdkops.plugin")
CLUSTER_TOKEN = "vfile-etcd-cluster"
CLUSTER_RECORD = "vfile-etcd-cluster"  # the swarm config that says the cluster exists
MANAGER_CERTIFICATE_WAIT = 30.0  # seconds swarm may take to give a promoted node its certificate
INFO_TTL = 5.0


class NotReady(Exception):
    pass


class Cluster:
    def __init__(self, config, docker):
        self.config = config
        self.docker = docker
        self.process = None
        self._info, self._info_time = None, 0.0
        self.data_dir = os.path.join(config.StateDir, "etcd-data")
        self.hosts_file = os.path.join(config.StateDir, "etcd-hosts")
        self._named = set()
        self._warned = False
        self.identity = None
        self.gate = None
        if config.EtcdEndpoints:
            self.tls = None if config.EtcdEndpoints.strip().startswith("http://") else ExternalTls(config)
        else:
            self.tls = SwarmTls(lambda: self.identity)

    # -- the swarm -----------------------------------------------------------------------

    def swarm(self, fresh=False):
        """Docker's ``Swarm`` info of this node (kept INFO_TTL seconds)."""
        if fresh or self._info is None or time.monotonic() - self._info_time > INFO_TTL:
            swarm = self.docker.get("/info").get("Swarm") or {}
            if swarm.get("LocalNodeState") != "active":
                raise NotReady(f"Swarm node state is not active, local node state: "
                               f"{swarm.get('LocalNodeState') or 'inactive'}")
            self._info, self._info_time = swarm, time.monotonic()
        return self._info

    @property
    def node_id(self):
        return self.swarm()["NodeID"]

    @property
    def address(self):
        return self.swarm()["NodeAddr"]

    def is_manager(self, fresh=False):
        return bool(self.swarm(fresh).get("ControlAvailable"))

    def endpoints(self):
        """Where etcd answers: the configured cluster, else the managers' client ports."""
        if self.config.EtcdEndpoints:
            return [e.strip().partition("://")[2] or e.strip()
                    for e in self.config.EtcdEndpoints.split(",") if e.strip()]
        port = self.config.EtcdClientPort
        swarm = self.swarm()
        managers = [m["Addr"].rpartition(":")[0] for m in swarm.get("RemoteManagers") or []]
        if swarm.get("ControlAvailable"):  # our own member first
            managers = [swarm["NodeAddr"]] + [m for m in managers if m != swarm["NodeAddr"]]
        return [f"{address}:{port}" for address in managers]

    def etcd(self):
        return Etcd(self.endpoints, tls=self.tls)

    # -- this node's certificate -------------------------------------------------------------

    def secure(self):
        """Take this node's swarm certificate for etcd (``SwarmLocked`` on a
        locked swarm); follow the swarm's rotation of it afterwards."""
        if self.config.EtcdEndpoints:
            if self.tls is None and not self._warned:
                log.warning("etcd at %s is reached over plain http: anyone who can reach it can read "
                            "and change the shared volumes' state and passwords", self.config.EtcdEndpoints)
                self._warned = True
            return
        if self.identity is None:
            source = self.config.SwarmCertificates or os.path.join(
                self.docker.get("/info")["DockerRootDir"], "swarm", "certificates")
            self.identity = NodeIdentity(source, os.path.join(self.config.StateDir, "tls"))
        self.identity.refresh()

    # -- running etcd on a manager --------------------------------------------------------

    def start(self):
        """Make sure etcd is reachable; start or join it on a manager."""
        self.secure()
        if self.config.EtcdEndpoints:
            self.etcd().members()
            return
        swarm = self.swarm(fresh=True)
        if swarm.get("ControlAvailable"):
            self.start_member()
        else:
            self.etcd().members()

    def _peer_url(self):
        return f"https://{self.node_id}:{self.config.EtcdPeerPort}"

    def _client_url(self):
        return f"https://{self.address}:{self.config.EtcdClientPort}"

    def _local(self):
        """This node's own member, behind its gate (its certificate is a
        worker's once the node is demoted: its node id is the name checked)."""
        return Etcd([f"127.0.0.1:{self.config.EtcdLocalPort}"],
                    tls=SwarmTls(lambda: self.identity, server_name=self.node_id))

    def name_members(self, etcd):
        """(Often, on a manager.) A member that ``etcd-hosts`` does not name
        yet (a manager promoted a moment ago, added but not started) is named
        at once: this node's etcd can then reach it as it joins."""
        if self.process is None and not os.path.exists(self.hosts_file):
            return
        names = {urllib.parse.urlsplit(url).hostname for m in etcd.members() for url in m.get("peerURLs") or []}
        if not names <= self._named:
            self.write_hosts()

    def write_hosts(self, nodes=None):
        """``etcd-hosts``: where each node of the swarm is, by node id (its
        certificate's name), as etcd's own ``/etc/hosts``. Every node, not
        only the managers: a demoted manager's member stays until it has
        left, and a promoted worker's joins before anyone asked again.
        Written in place (it is bind mounted), only when it changed."""
        nodes = self.docker.get("/nodes") if nodes is None else nodes
        addresses = {self.node_id: self.address}
        for node in nodes:
            address = ((node.get("ManagerStatus") or {}).get("Addr") or "").rpartition(":")[0] \
                or (node.get("Status") or {}).get("Addr")
            if address and address != "0.0.0.0":
                addresses.setdefault(node["ID"], address)
        lines = ["127.0.0.1 localhost"] + sorted(f"{address} {node}" for node, address in addresses.items())
        text = "\n".join(lines) + "\n"
        self._named = {line.split()[1] for line in lines}
        try:
            with open(self.hosts_file) as f:
                if f.read() == text:
                    return
        except FileNotFoundError:
            pass
        with open(self.hosts_file, "w") as f:
            f.write(text)

    def runs_member(self):
        """Whether this node runs an etcd member, or keeps the data of one."""
        return (pids.running(os.path.join(self.config.StateDir, "etcd.pid"), self.config.EtcdBinary) is not None
                or os.path.isdir(os.path.join(self.data_dir, "member")))

    def _manager_certificate(self, wait=MANAGER_CERTIFICATE_WAIT):
        """Wait until the swarm has given this node a manager's certificate:
        its peers take no other."""
        deadline = time.monotonic() + wait
        while True:
            self.identity.refresh()
            if self.identity.is_manager():
                return
            if time.monotonic() > deadline:
                raise NotReady("This node is a swarm manager, but the swarm has not given it a manager's "
                               "certificate yet: its etcd member waits for it")
            time.sleep(1)

    def start_member(self):
        """Run this manager's etcd member (start, rejoin or join it), and its gate."""
        self._start_member()
        if self.gate is None:
            gate = Gate(self.address, self.config.EtcdClientPort, self.config.EtcdLocalPort, self.identity,
                        self.node_id, lambda: [node["ID"] for node in self.docker.get("/nodes")])
            gate.start()
            self.gate = gate

    def _start_member(self):
        local = self._local()
        if self._answers(local):  # still running from before a plugin restart
            log.info("etcd member of this node is running")
            return
        self._manager_certificate()
        if pids.running(os.path.join(self.config.StateDir, "etcd.pid"), self.config.EtcdBinary) is not None:
            log.info("The etcd member of this node runs, but does not answer yet")
            self._wait(local)
            return
        if os.path.isdir(os.path.join(self.data_dir, "member")):
            log.info("Rejoining the etcd cluster with the data in %s", self.data_dir)
            self._run([])
        else:
            nodes = self.docker.get("/nodes") or []
            self.write_hosts(nodes)
            running = self._running_members(nodes)
            leader = next((n for n in nodes if (n.get("ManagerStatus") or {}).get("Leader")), None)
            if running:
                self._join(Etcd(running, tls=self.tls))
            elif leader is None:
                raise NotReady("The swarm does not have a leader. It's possible that too few managers are "
                               "online. Make sure more than half of the managers are online.")
            elif leader.get("ID") != self.node_id:
                raise NotReady("No etcd member runs on the swarm managers yet; the swarm leader's "
                               "plugin starts the first")
            else:
                # Only when no other manager runs etcd, and never twice: a node
                # promoted while the leader is demoted can be the swarm's new
                # leader, a leader can lose its data while the other members are
                # out of reach, and a second cluster would split the state.
                self._record_cluster()
                log.info("Starting a new etcd cluster on the swarm leader")
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self._run(["--initial-cluster-token", CLUSTER_TOKEN, "--initial-cluster",
                           f"{self.node_id}={self._peer_url()}", "--initial-cluster-state", "new"])
        self._wait(local)

    def _record_cluster(self):
        """Record in the swarm's own replicated store (a swarm config) that this
        swarm's etcd cluster exists, before it is started; ``NotReady`` when
        one was recorded already: its members are only to be joined."""
        found = self.docker.get(f"/configs?filters={filters(name=[CLUSTER_RECORD])}") or []
        recorded = next((c for c in found if c["Spec"]["Name"] == CLUSTER_RECORD), None)
        if recorded is None:
            data = json.dumps({"node": self.node_id, "address": self.address, "since": time.time()})
            try:
                self.docker.post("/configs/create", {
                    "Name": CLUSTER_RECORD, "Labels": {"vmdkops.vfile": "etcd"},
                    "Data": base64.b64encode(data.encode()).decode()})
                return
            except DockerError as exc:
                if exc.status != 409:  # another leader recorded it a moment ago
                    raise
            recorded = {"CreatedAt": "now", "Spec": {}}
        raise NotReady(f"This swarm's etcd cluster exists (recorded in the swarm config {CLUSTER_RECORD} "
                       f"at {recorded.get('CreatedAt')}), but no member of it answers on the managers: "
                       "waiting for one to join it (a new cluster would split the volumes' state). If every "
                       f"member's data is truly gone, 'docker config rm {CLUSTER_RECORD}' lets this node "
                       "start a new, empty one.")

    def _running_members(self, nodes):
        """The client endpoints of the other managers whose etcd answers (a
        manager's gate takes connections while its etcd is down)."""
        port = self.config.EtcdClientPort
        found = []
        for node in nodes:
            status = node.get("ManagerStatus") or {}
            if not status or node.get("ID") == self.node_id:
                continue
            endpoint = f"{status['Addr'].rpartition(':')[0]}:{port}"
            if self._answers(Etcd([endpoint], timeout=1, tls=self.tls)):
                found.append(endpoint)
        return found

    def _join(self, cluster):
        peer, client = self._peer_url(), self._client_url()
        members = cluster.members()
        mine = next((m for m in members if (m.get("peerURLs") or [""])[0] == peer
                     or client in (m.get("clientURLs") or [])), None)
        if mine is not None and mine.get("name"):
            log.info("Replacing the stale etcd member %s of %s", mine["name"], peer)
            cluster.remove_member(mine["ID"])
            members = [m for m in members if m["ID"] != mine["ID"]]
            mine = None
        if mine is None:
            cluster.add_member(peer)
        initial = [f"{m['name']}={m['peerURLs'][0]}" for m in members if m.get("name")]
        initial.append(f"{self.node_id}={peer}")
        shutil.rmtree(self.data_dir, ignore_errors=True)
        log.info("Joining the etcd cluster %s", ",".join(initial))
        self._run(["--initial-cluster-token", CLUSTER_TOKEN, "--initial-cluster", ",".join(initial),
                   "--initial-cluster-state", "existing"])

    def _run(self, extra):
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        if not os.path.exists(self.hosts_file):
            self.write_hosts()
        address, pport = self.address, self.config.EtcdPeerPort
        tls = self.identity
        argv = [self.config.EtcdBinary, "--name", self.node_id, "--data-dir", self.data_dir,
                "--advertise-client-urls", self._client_url(),
                "--initial-advertise-peer-urls", self._peer_url(),
                # Its clients come through this plugin's gate (``gate``): etcd takes the loopback's.
                "--listen-client-urls", f"https://127.0.0.1:{self.config.EtcdLocalPort}",
                "--listen-peer-urls", f"https://{address}:{pport}",
                "--cert-file", tls.cert, "--key-file", tls.key, "--trusted-ca-file", tls.ca,
                "--client-cert-auth",
                "--peer-cert-file", tls.cert, "--peer-key-file", tls.key, "--peer-trusted-ca-file", tls.ca,
                "--peer-client-cert-auth", "--peer-cert-allowed-hostname", MANAGER_NAME,
                # A peer's certificate names no address; that it is a manager's is checked.
                "--experimental-peer-skip-client-san-verification"] + extra
        # etcd's own /etc/hosts (bind mounted in a mount namespace of its own) names the managers.
        wrapped = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                   'mount --bind "$0" /etc/hosts && exec "$@"', self.hosts_file] + argv
        with open(os.path.join(self.config.StateDir, "etcd.log"), "a") as out:
            # Its own session: a restart of the plugin leaves the member running.
            self.process = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        pids.write(os.path.join(self.config.StateDir, "etcd.pid"), self.process.pid)

    def _wait(self, local, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not self._answers(local):
            if self.process is not None and self.process.poll() is not None:
                raise NotReady(f"etcd exited with {self.process.returncode}; see "
                               f"{os.path.join(self.config.StateDir, 'etcd.log')}")
            if time.monotonic() > deadline:
                raise NotReady("Timeout reached; ETCD cluster is not started")
            time.sleep(0.1)

    @staticmethod
    def _answers(etcd):
        try:
            etcd.members()
            return True
        except EtcdError:
            return False

    def leave(self):
        """Leave the etcd cluster (a demoted manager): hand the leadership over
        if this member has it (an election while requests run fails them),
        remove this node's member, stop it, and remove its data."""
        peer = self._peer_url()
        etcd = self.etcd()
        members = etcd.members()
        mine = next((m for m in members if peer in (m.get("peerURLs") or [])), None)
        if mine is not None:
            others = [m for m in members if m["ID"] != mine["ID"] and m.get("name")]
            local = self._local()
            try:
                if others and local.status().get("leader") == mine["ID"]:
                    log.info("Handing etcd's leadership to %s before leaving", others[0]["name"])
                    local.move_leader(others[0]["ID"])
            except EtcdError as exc:
                log.warning("Could not hand etcd's leadership over: %s", exc)
            log.info("Remove self from ETCD member due to demotion. ")
            etcd.remove_member(mine["ID"])
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop(self):
        """Stop the etcd member this plugin runs, and its gate (a plugin that
        stops takes its member down)."""
        if self.gate is not None:
            self.gate.stop()
            self.gate = None
        pids.stop(os.path.join(self.config.StateDir, "etcd.pid"), self.config.EtcdBinary, wait=10)
        if self.process is not None:
            self.process.poll()
