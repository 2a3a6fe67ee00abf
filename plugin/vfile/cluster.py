"""This node in the swarm, and the etcd cluster the vfile plugins keep their
state in (spec plugin §4.2). With ``EtcdEndpoints`` set, that existing
cluster is used as it is. Otherwise etcd runs on the swarm managers, started
by their plugins from Debian's ``etcd``: the leader's plugin starts a
one-member cluster when no other manager runs etcd, other managers join it
(a stale member of the same peer address is replaced), a restarted manager
rejoins with its data, and workers are clients of the managers."""

import logging
import os
import shutil
import socket
import subprocess
import time

from . import pids
from .etcd import Etcd, EtcdError

log = logging.getLogger("vmdkops.plugin")
CLUSTER_TOKEN = "vfile-etcd-cluster"
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
            return [e.strip() for e in self.config.EtcdEndpoints.split(",") if e.strip()]
        port = self.config.EtcdClientPort
        swarm = self.swarm()
        managers = [m["Addr"].rpartition(":")[0] for m in swarm.get("RemoteManagers") or []]
        if swarm.get("ControlAvailable"):  # our own member first
            managers = [swarm["NodeAddr"]] + [m for m in managers if m != swarm["NodeAddr"]]
        return [f"{address}:{port}" for address in managers]

    def etcd(self):
        return Etcd(self.endpoints)

    # -- running etcd on a manager --------------------------------------------------------

    def start(self):
        """Make sure etcd is reachable; start or join it on a manager."""
        if self.config.EtcdEndpoints:
            self.etcd().members()
            return
        swarm = self.swarm(fresh=True)
        if swarm.get("ControlAvailable"):
            self.start_member()
        else:
            self.etcd().members()

    def _peer_url(self):
        return f"http://{self.address}:{self.config.EtcdPeerPort}"

    def _local(self):
        return Etcd([f"{self.address}:{self.config.EtcdClientPort}"])

    def start_member(self):
        local = self._local()
        if self._answers(local):  # still running from before a plugin restart
            log.info("etcd member of this node is running")
            return
        if os.path.isdir(os.path.join(self.data_dir, "member")):
            log.info("Rejoining the etcd cluster with the data in %s", self.data_dir)
            self._run([])
        else:
            nodes = self.docker.get("/nodes") or []
            running = self._running_members(nodes)
            leader = next((n for n in nodes if (n.get("ManagerStatus") or {}).get("Leader")), None)
            if running:
                self._join(Etcd(running))
            elif leader is None:
                raise NotReady("The swarm does not have a leader. It's possible that too few managers are "
                               "online. Make sure more than half of the managers are online.")
            elif leader.get("ID") != self.node_id:
                raise NotReady("No etcd member runs on the swarm managers yet; the swarm leader's "
                               "plugin starts the first")
            else:
                # Only when no other manager runs etcd: a node promoted while the
                # leader is demoted can be the swarm's new leader, and a second
                # cluster would split the state.
                log.info("Starting a new etcd cluster on the swarm leader")
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self._run(["--initial-cluster-token", CLUSTER_TOKEN, "--initial-cluster",
                           f"{self.node_id}={self._peer_url()}", "--initial-cluster-state", "new"])
        self._wait(local)

    def _running_members(self, nodes):
        """The client endpoints of the other managers whose etcd takes a connection."""
        port = self.config.EtcdClientPort
        found = []
        for node in nodes:
            status = node.get("ManagerStatus") or {}
            if not status or node.get("ID") == self.node_id:
                continue
            address = status["Addr"].rpartition(":")[0]
            try:
                socket.create_connection((address, port), timeout=1).close()
                found.append(f"{address}:{port}")
            except OSError:
                pass
        return found

    def _join(self, cluster):
        peer = self._peer_url()
        members = cluster.members()
        mine = next((m for m in members if (m.get("peerURLs") or [""])[0] == peer), None)
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
        address, cport, pport = self.address, self.config.EtcdClientPort, self.config.EtcdPeerPort
        argv = [self.config.EtcdBinary, "--name", self.node_id, "--data-dir", self.data_dir,
                "--advertise-client-urls", f"http://{address}:{cport}",
                "--initial-advertise-peer-urls", f"http://{address}:{pport}",
                "--listen-client-urls", f"http://{address}:{cport},http://127.0.0.1:{cport}",
                "--listen-peer-urls", f"http://{address}:{pport}"] + extra
        with open(os.path.join(self.config.StateDir, "etcd.log"), "a") as out:
            # Its own session: a restart of the plugin leaves the member running.
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
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
        """Leave the etcd cluster (a demoted manager): remove this node's member,
        stop it, and remove its data."""
        peer = self._peer_url()
        etcd = self.etcd()
        mine = next((m for m in etcd.members() if peer in (m.get("peerURLs") or [])), None)
        if mine is not None:
            log.info("Remove self from ETCD member due to demotion. ")
            etcd.remove_member(mine["ID"])
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop(self):
        """Stop the etcd member this plugin runs (a plugin that stops takes its member down)."""
        pids.stop(os.path.join(self.config.StateDir, "etcd.pid"), self.config.EtcdBinary, wait=10)
        if self.process is not None:
            self.process.poll()
