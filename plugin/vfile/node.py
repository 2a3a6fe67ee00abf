"""This node's parts, made once from the settings and shared by the driver
(Docker's operations on this node), its mount records (``records``), its
start-up and background loops (``background``), the managers' work
(``managers``) and ``vfile --check`` (``check``): Docker, the swarm and
etcd (``cluster``), the volumes' state (``state``), the file servers
(``fileserver``), the node's lease and the volumes' locks under it."""

import threading

from ..docker_api import Docker
from .cluster import Cluster
from .fileserver import FileServers
from .lease import Lease
from .state import State

LEASE_TTL = 10


class Node:
    def __init__(self, config, regained=lambda lease: None):
        """``regained(lease)`` puts this node's keys back under a new lease."""
        self.config = config
        self.docker = Docker(config.DockerSocket)
        self.cluster = Cluster(config, self.docker)
        self.etcd = self.cluster.etcd()
        self.servers = FileServers(self.docker, config)
        self.store = State(self.etcd, config.ServiceTimeout)
        self.lease = Lease(self.etcd, LEASE_TTL, regained)
        self.stopping = threading.Event()

    @property
    def timeout(self):
        """Seconds a file server may take to start or stop."""
        return self.config.ServiceTimeout

    def lock(self, name):
        """The volume's mounts' lock."""
        return self.lease.use(lambda lease: self.store.mounts_lock(name, lease))

    def server_lock(self, name):
        """The volume's file server's lock (after its mounts' lock, where both are taken)."""
        return self.lease.use(lambda lease: self.store.server_lock(name, lease))
