"""What a vfile plugin does besides Docker's requests: its start-up (etcd,
the node's lease, the managers' work, the recovery of the mount counts)
and stop; and in the background, follow the file servers of its mounts
when swarm moves them (the relays are pointed at the new place), and every
``HELPER_INTERVAL`` seconds follow the swarm's rotation of the node's
certificate and the node's swarm role (a promoted node joins the etcd
cluster, a demoted one leaves it), record the unmounts etcd did not hear
of, and on a manager keep etcd's hosts and gate and stop the file servers
nobody uses any more."""

import json
import logging
import os
import threading

from ..docker_api import DockerError, DockerUnavailable
from ..refcount import DriverError
from .cluster import NotReady
from .etcd import EtcdError
from .managers import Managers
from .pki import NoCertificates, SwarmLocked
from .state import INFO

log = logging.getLogger("vmdkops.plugin")
HELPER_INTERVAL = 15


class Background:
    def __init__(self, node, relays, records, restore):
        """``restore()`` rebuilds the driver's counts of this node's mounts
        and makes the relays and ``records`` match them."""
        self.relays, self.records, self.restore = relays, records, restore
        self.config, self.docker, self.cluster, self.etcd = node.config, node.docker, node.cluster, node.etcd
        self.servers, self.store, self.lease, self.stopping = node.servers, node.store, node.lease, node.stopping
        self.managers = Managers(node)
        self.initialized = threading.Event()
        self.refused = None  # why the plugin cannot serve at all (a locked swarm)

    # -- start-up -------------------------------------------------------------------------

    def start(self):
        """Connect to (or start) etcd, then take the node's lease, watch the
        triggers on a manager, and rebuild the mount counts."""
        log.info("VSSD plugin started version=vSphere Shared Storage for Docker Driver socket=%s",
                 self.config.socket_path)
        # What leads to a share or a password (etcd's data, the node's key,
        # the SMB clients' settings) is root's alone.
        os.makedirs(self.config.StateDir, mode=0o700, exist_ok=True)
        os.chmod(self.config.StateDir, 0o700)
        threading.Thread(target=self._prepare_node, name="image", daemon=True).start()
        delay = 0.5
        while not self.stopping.is_set():
            try:
                self.cluster.start()
                self.lease.grant()
                break
            except SwarmLocked as exc:
                log.error("%s", exc)
                self.refused = str(exc)
                return
            except (EtcdError, NotReady, NoCertificates, DockerError, DockerUnavailable, OSError) as exc:
                log.warning("Failed to create new KV store. Retry: %s", exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5)
        if self.stopping.is_set():
            return
        threading.Thread(target=self.lease.keep, args=(self.stopping,), name="lease", daemon=True).start()
        if self.cluster.is_manager():
            self.managers.start()
        threading.Thread(target=self._follow_servers, name="servers", daemon=True).start()
        self.initialized.set()
        log.info("VSSD plugin is initialized: node=%s address=%s manager=%s etcd=%s",
                 self.cluster.node_id, self.cluster.address, self.managers.active,
                 ",".join(self.cluster.endpoints()))
        self.restore()
        threading.Thread(target=self._helper, name="helper", daemon=True).start()

    def _prepare_node(self):
        """Make this node able to run file servers: the Samba image loaded,
        and the volume plugins known to the swarm. Swarm places a task that
        mounts a volume of a driver only on nodes whose description lists
        that driver, and Docker lists a plugin on a socket once it was used:
        a listing of the volumes uses them all."""
        try:
            self.docker.get("/volumes")
            self.servers.ensure_image()
        except (DockerError, DockerUnavailable, OSError) as exc:
            log.warning("Could not prepare this node for file servers: %s", exc)

    def stop(self):
        self.stopping.set()
        self.etcd.close_watches()
        self.lease.revoke()
        if not self.config.EtcdEndpoints:
            self.cluster.stop()

    # -- the background loops ------------------------------------------------------------------

    def _follow_servers(self):
        """Point the relays of this node's mounts at their file server when it
        moves (swarm started it on another node)."""
        while not self.stopping.is_set():
            try:
                revision = self.etcd.revision() + 1
                self._point_relays()
                while not self.stopping.is_set():
                    revision = self.etcd.watch(INFO, revision, self._on_info)
                    if not self.stopping.is_set():
                        self.stopping.wait(1)
                        self._point_relays()
            except EtcdError as exc:
                log.warning("Following the file servers failed: %s", exc)
                self.stopping.wait(1)

    def _point_relays(self):
        for name in self.relays.volumes():
            info = self.store.info_text(name)
            if info:
                self._point(name, info)

    def _on_info(self, kind, item, previous):
        name = item.key[len(INFO):]
        if kind == "PUT" and name in self.relays.volumes():
            self._point(name, item.value)

    def _point(self, name, info):
        details = json.loads(info)
        if details.get("address") and details.get("port") and \
                self.relays.move(name, details["address"], details["port"]):
            log.info("The file server of %s is now at %s:%s", name, details["address"], details["port"])

    def _helper(self):
        """Every HELPER_INTERVAL seconds: follow the swarm's rotation of this
        node's certificate and its swarm role (a promoted node joins the etcd
        cluster, a demoted one leaves it) and, on a manager, stop the file
        servers nobody uses any more (their last client was a node that died)
        or whose volume is gone."""
        while not self.stopping.wait(HELPER_INTERVAL):
            try:
                self.cluster.secure()  # the swarm may have rotated the node's certificate
                self.records.settle()
                self._follow_role()
                if self.managers.active:
                    if not self.config.EtcdEndpoints:
                        self.cluster.write_hosts()
                        if self.cluster.gate is not None:
                            self.cluster.gate.refresh()  # a node removed from the swarm is let in no more
                    self.managers.collect()
            except (EtcdError, NotReady, NoCertificates, DockerError, DockerUnavailable, DriverError,
                    OSError) as exc:
                log.warning("Helper loop: %s", exc)

    def _follow_role(self):
        manager = self.cluster.is_manager(fresh=True)
        if manager and not self.managers.active:
            log.info("Node is promoted to manager, prepare to join ETCD cluster")
            if not self.config.EtcdEndpoints:
                self.cluster.start_member()
            self.managers.start()
        elif not manager:
            if self.managers.active:
                log.info("Node is demoted from manager to worker, prepare to leave ETCD cluster")
                self.managers.stop()
            if not self.config.EtcdEndpoints and self.cluster.runs_member():  # until it has left
                self.cluster.leave()
                log.info("Stopped ETCD service due to demotion")
