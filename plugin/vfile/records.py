"""This node's mounts as etcd knows them: a durable record per mount and a
live key under the node's lease, removed by the unmount that ends it. An
unmount etcd did not hear of is recorded when it answers again, and after
a restart the records are made to match the mounts counted here.
``users(name)`` is how many mounts of ``name`` this node counts."""

import logging
import threading

from ..refcount import DriverError
from .etcd import EtcdError
from .state import STOP

log = logging.getLogger("vmdkops.plugin")


class MountRecords:
    def __init__(self, node, users):
        self.node, self.users = node, users
        self.store, self.cluster, self.lease = node.store, node.cluster, node.lease
        self.unsettled = set()  # volumes unmounted here while etcd did not answer
        self._guard = threading.Lock()

    def register(self, name):
        """This node's mount of ``name``: its record, and that it is alive."""
        self.lease.use(lambda lease: self.store.mount(name, self.cluster.node_id, self.cluster.address, lease))

    def alive_again(self, names, lease):
        """(A new lease.) This node is alive again for every volume it mounts."""
        for name in names:
            self.store.alive_again(name, self.cluster.node_id, self.cluster.address, lease)

    def release_server(self, name):
        """After this node stopped using a volume: if no node uses it, ask
        the managers to stop its file server (they check again, locked)."""
        try:
            if not self.store.mounts_of(name):
                self.store.increment(STOP + name)
        except (EtcdError, DriverError) as exc:  # a volume that is gone has no trigger: no server
            log.warning("Could not ask for the file server of %s to stop: %s", name, exc)

    def unmounted(self, name):
        """This node unmounted ``name``: recorded now, or once etcd answers
        (the record must not pin the volume)."""
        try:
            self._unregister(name)
        except EtcdError as exc:
            log.warning("The unmount of %s is recorded in etcd as soon as it answers: %s", name, exc)
            with self._guard:
                self.unsettled.add(name)

    def _unregister(self, name):
        unlock = self.node.lock(name)
        try:
            self.store.unmount(name, self.cluster.node_id)
            self.release_server(name)
        finally:
            unlock()

    def settle(self):
        """Record the unmounts that etcd did not hear of."""
        with self._guard:
            names = list(self.unsettled)
        for name in names:
            if not self.users(name):  # mounted again meanwhile: its record is right
                self._unregister(name)
                log.info("The unmount of %s is recorded in etcd", name)
            with self._guard:
                self.unsettled.discard(name)

    def reconcile(self):
        """After a restart: this node's records and live keys are the volumes
        mounted here, no more (a mount that ended while the plugin was down
        goes) and no fewer (a mount that outlived the old lease comes back)."""
        node = self.cluster.node_id
        recorded = {name for name, nodes in self.store.mounted().items() if node in nodes}
        recorded |= {name for name, alive in self.store.alive() if alive == node}
        for name in sorted(recorded):
            if not self.users(name):
                log.info("Dropping the stale registration of %s on this node", name)
                self.store.unmount(name, node)
                self.release_server(name)
