"""The node's etcd lease: its client keys and its locks are bound to it, so
a dead node's mounts and locks go when it expires. A live node can lose it
too (etcd had no quorum for longer than its TTL): whichever thread sees that
first takes a new one and puts the node's keys back under it, once."""

import logging
import threading

from .etcd import EtcdError, LeaseNotFound

log = logging.getLogger("vmdkops.plugin")


class Lease:
    def __init__(self, etcd, ttl, regained):
        """``regained(lease)`` puts the holder's keys under a new lease."""
        self.etcd, self.ttl, self.regained = etcd, ttl, regained
        self.id = None
        self._taking = threading.RLock()

    def grant(self):
        self.id = self.etcd.grant(self.ttl)

    def keep(self, stopping):
        """Renew it every third of its TTL until ``stopping`` is set."""
        while not stopping.wait(self.ttl / 3):
            lease = self.id
            try:
                if self.etcd.keepalive(lease) <= 0:  # etcd no longer knows it
                    self._again(lease)
            except EtcdError as exc:
                log.warning("Could not renew the node's etcd lease: %s", exc)

    def use(self, call):
        """``call(lease)``, and once more under a new lease if etcd lost this one."""
        lease = self.id
        try:
            return call(lease)
        except LeaseNotFound:
            self._again(lease)
            return call(self.id)

    def _again(self, lost):
        with self._taking:
            if self.id != lost:
                return  # another thread took the new one
            self.id = self.etcd.grant(self.ttl)
            log.warning("The node's etcd lease had expired; mounts registered again")
            self.regained(self.id)

    def revoke(self):
        if self.id is not None:
            try:
                self.etcd.revoke(self.id)
            except EtcdError:
                pass
