"""The shared volumes' state in etcd (spec plugin §4.3, with D12's changes):
the keys, and what the driver and the managers do with them alike.

    SVOLS_stat_<v>            Creating -> Ready -> Mounted -> Ready
    SVOLS_info_<v>            {"username", "password", "address", "port",
                               "serviceName", "opts"}: the server and the
                               volume's own random SMB password
    SVOLS_start_trigger_<v>   counters the mounting and unmounting nodes
    SVOLS_stop_trigger_<v>    increment; the managers watch them and one
    SVOLS_start_marker_<v>    wins each event by moving the marker to the
    SVOLS_stop_marker_<v>     trigger's value (compare-and-put)
    SVOLS_client_<v>_<node>   the node's address while it has the volume
                              mounted, bound to the node's lease
    SVOLS_gref_<v>-lock/...   the volume's mounts' mutex (lease-bound)
    SVOLS_stat_<v>-lock/...   its file server's mutex (lease-bound)

There is no SVOLS_gref_<v> counter: the global refcount is the number of
live client keys, so a dead node's mounts expire with its lease."""

import json
import re
import time

from ..refcount import DriverError
from . import etcd as kv
from .etcd import WaitTimeout

STAT, INFO, CLIENT = "SVOLS_stat_", "SVOLS_info_", "SVOLS_client_"
START, STOP = "SVOLS_start_trigger_", "SVOLS_stop_trigger_"
START_MARK, STOP_MARK = "SVOLS_start_marker_", "SVOLS_stop_marker_"
CREATING, READY, MOUNTED = "Creating", "Ready", "Mounted"
USER = "vfile"
# A DNS name component: the name is part of the service's name, vFileServer<v>
# (at most 63 characters).
NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,50}[A-Za-z0-9])?$")


def check_name(name):
    if not NAME.match(name or ""):
        raise DriverError(
            f"Invalid volume name '{name}': the name of a shared volume is part of its file server's "
            "DNS name, so it may have only letters, digits and '-', must start and end with a letter "
            "or digit, and have at most 52 characters")


def keys(volume):
    """Every key of a volume but its clients'."""
    return [STAT + volume, INFO + volume, START + volume, STOP + volume, START_MARK + volume,
            STOP_MARK + volume]


def clients(volume):
    """The prefix of a volume's client keys."""
    return f"{CLIENT}{volume}_"


class State:
    """The etcd operations on the volumes' keys: locks, counters, waits."""

    retrigger = 10

    def __init__(self, etcd, timeout):
        self.etcd = etcd
        self.timeout = timeout

    def lock(self, name, lease, which="gref"):
        return self.etcd.lock(f"SVOLS_{which}_{name}-lock", lease, self.timeout + 20)

    def increment(self, key):
        deadline = time.monotonic() + 10
        while True:
            found = self.etcd.range(key)
            if not found:
                raise DriverError(f"AtomicIncr: no key found for {key}")
            value = str(int(found[0].value or 0) + 1)
            done, _ = self.etcd.txn([kv.value_is(key, found[0].value)], [kv.put(key, value)])
            if done:
                return value
            if time.monotonic() > deadline:
                raise DriverError("Timeout reached; AtomicIncr is not complete")

    def wait_for(self, name, state, trigger):
        """The info of a volume once its state is ``state``, after moving
        ``trigger`` (START or STOP). The trigger is moved again every
        ``retrigger`` seconds meanwhile: the manager that took the event may
        have failed (swarm without a leader for a moment after a lost quorum)."""
        deadline = time.monotonic() + self.timeout + 10
        self.increment(trigger + name)
        while True:
            try:
                reached = self.etcd.wait_until(STAT + name, state,
                                               max(min(self.retrigger, deadline - time.monotonic()), 0.01))
                break
            except WaitTimeout:
                if time.monotonic() >= deadline:
                    raise
                self.increment(trigger + name)
        if not reached:
            raise DriverError("No such volume")
        info = self.etcd.get(INFO + name)
        if info is None:
            raise DriverError("No such volume")
        return json.loads(info)

    def states(self):
        """Volume name -> state of every volume."""
        return {item.key[len(STAT):]: item.value for item in self.etcd.range(STAT, prefix=True)
                if "/" not in item.key}

    def used(self):
        """The volumes some node mounts."""
        return {item.key[len(CLIENT):].rpartition("_")[0] for item in self.etcd.range(CLIENT, prefix=True)}
