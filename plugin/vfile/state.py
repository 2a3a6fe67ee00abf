"""The shared volumes' state in etcd (spec plugin §4.3, with D12's changes),
and the one place that changes it: every transition of a volume is a method
of ``State``, one etcd transaction each; no other module writes these keys.

    SVOLS_stat_<v>            Creating -> Ready -> Mounted -> Ready
    SVOLS_info_<v>            {"username", "password", "address", "port",
                               "serviceName", "opts", "vmgroup", "created"}:
                               the server, the volume's own random SMB
                               password, the vmgroup its base volume is in
                               and when it was made
    SVOLS_start_trigger_<v>   counters the mounting and unmounting nodes
    SVOLS_stop_trigger_<v>    increment; the managers watch them and one
    SVOLS_start_marker_<v>    wins each event by moving the marker to the
    SVOLS_stop_marker_<v>     trigger's value (compare-and-put)
    SVOLS_mount_<v>_<node>    the node's mount of the volume: a durable record
                              ({"address", "unreachable"}), made and removed
                              by that node's mount and unmount; only a node
                              the swarm has reported down for longer than a
                              grace period loses it otherwise
    SVOLS_client_<v>_<node>   the node's address while it is alive, bound to
                              the node's lease (its absence beside a mount
                              record: the node is out of reach)
    SVOLS_gref_<v>-lock/...   the volume's mounts' mutex (lease-bound)
    SVOLS_stat_<v>-lock/...   its file server's mutex (lease-bound)

Locks are taken in one order: the mounts' lock, then the server's.

The global refcount is the number of mount records: a node cut off from the
managers for longer than its lease keeps its mounts counted (its file server
is not stopped under it, the volume not removed), and a node that comes back
finds them as it left them."""

import json
import re
import time
from dataclasses import dataclass, field

from ..refcount import DriverError
from . import txn
from .etcd import WaitTimeout

STAT, INFO, CLIENT, MOUNT = "SVOLS_stat_", "SVOLS_info_", "SVOLS_client_", "SVOLS_mount_"
START, STOP = "SVOLS_start_trigger_", "SVOLS_stop_trigger_"
START_MARK, STOP_MARK = "SVOLS_start_marker_", "SVOLS_stop_marker_"
CREATING, READY, MOUNTED = "Creating", "Ready", "Mounted"
USER = "vfile"
# A DNS name component: the name is part of the service's name, vFileServer<v>
# (at most 63 characters).
NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,50}[A-Za-z0-9])?$")
# A lock is held across a file server's start: its timeout, and this margin.
LOCK_MARGIN = 20
# A wait for a file server is the server's timeout and this margin (the
# trigger may be moved again meanwhile).
WAIT_MARGIN = 10
INCREMENT_FOR = 10  # seconds a counter's compare-and-put is retried


def check_name(name):
    if not NAME.match(name or ""):
        raise DriverError(
            f"Invalid volume name '{name}': the name of a shared volume is part of its file server's "
            "DNS name, so it may have only letters, digits and '-', must start and end with a letter "
            "or digit, and have at most 52 characters")


def keys(volume):
    """Every key of a volume but its mounts' and clients'."""
    return [STAT + volume, INFO + volume, START + volume, STOP + volume, START_MARK + volume,
            STOP_MARK + volume]


def _node_of(key, prefix, volume):
    return key[len(prefix) + len(volume) + 1:]


@dataclass
class Snapshot:
    """A volume as one read shows it; ``mounts``: node -> mount record,
    ``alive``: the nodes whose live key is there."""
    state: str
    info: dict
    mounts: dict = field(default_factory=dict)
    alive: set = field(default_factory=set)

    def clients(self):
        """The addresses of the nodes that mount it, sorted; those out of reach
        say since when."""
        shown = []
        for node, record in sorted(self.mounts.items()):
            if node in self.alive or not record.get("unreachable"):
                shown.append(record.get("address", node))
            else:
                since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record["unreachable"]))
                shown.append(f"{record.get('address', node)} (unreachable since {since})")
        return sorted(shown)


class State:
    """The etcd operations on the volumes' keys: transitions, locks,
    counters, waits."""

    retrigger = 10

    def __init__(self, etcd, timeout):
        self.etcd = etcd
        self.timeout = timeout

    # -- locks (the mounts' before the server's) ---------------------------------------------

    def mounts_lock(self, name, lease):
        return self.etcd.lock(f"SVOLS_gref_{name}-lock", lease, self.timeout + LOCK_MARGIN)

    def server_lock(self, name, lease):
        return self.etcd.lock(f"SVOLS_stat_{name}-lock", lease, self.timeout + LOCK_MARGIN)

    # -- reading ------------------------------------------------------------------------------

    def snapshot(self, name):
        """The volume's ``Snapshot``, or None when it does not exist."""
        _, (stat, info, mounts, clients) = self.etcd.txn([], [
            txn.get_op(STAT + name), txn.get_op(INFO + name), txn.get_op(f"{MOUNT}{name}_", prefix=True),
            txn.get_op(f"{CLIENT}{name}_", prefix=True)])
        if not stat:
            return None
        try:
            details = json.loads(info[0].value) if info else {}
        except ValueError as exc:
            raise DriverError(f"Failed to unmarshal data. {exc}") from None
        return Snapshot(stat[0].value, details,
                        {_node_of(m.key, MOUNT, name): _record(m.value) for m in mounts},
                        {_node_of(c.key, CLIENT, name) for c in clients})

    def info_text(self, name):
        """The volume's info as stored (for a compare-and-put), or None."""
        return self.etcd.get(INFO + name)

    def mounts_of(self, name):
        """Node -> mount record of the nodes that mount the volume."""
        return {_node_of(m.key, MOUNT, name): _record(m.value)
                for m in self.etcd.range(f"{MOUNT}{name}_", prefix=True)}

    def states(self):
        """Volume name -> state of every volume."""
        return {item.key[len(STAT):]: item.value for item in self.etcd.range(STAT, prefix=True)
                if "/" not in item.key}

    def mounted(self):
        """Volume name -> {node: mount record} of every volume some node mounts."""
        found = {}
        for item in self.etcd.range(MOUNT, prefix=True):
            volume, _, node = item.key[len(MOUNT):].rpartition("_")
            found.setdefault(volume, {})[node] = _record(item.value)
        return found

    def alive(self):
        """(volume, node) of every live key."""
        return {tuple(item.key[len(CLIENT):].rsplit("_", 1)) for item in self.etcd.range(CLIENT, prefix=True)}

    # -- a volume's life ----------------------------------------------------------------------

    def create(self, name, info):
        """Create-if-absent: None when made, else the options it was made with."""
        made, ranges = self.etcd.txn(
            [txn.absent(STAT + name)],
            [txn.put_op(STAT + name, CREATING), txn.put_op(INFO + name, json.dumps(info))]
            + [txn.put_op(key, "0") for key in keys(name)[2:]],
            [txn.get_op(INFO + name)])
        if made:
            return None
        return json.loads(ranges[0][0].value).get("opts", {}) if ranges and ranges[0] else {}

    def created(self, name, info):
        """Creating -> Ready, with the info completed; False when it was
        removed meanwhile."""
        done, _ = self.etcd.txn([txn.value_is(STAT + name, CREATING)],
                                [txn.put_op(STAT + name, READY), txn.put_op(INFO + name, json.dumps(info))])
        return done

    def forget(self, name):
        """Undo a create that failed (only while it is Creating)."""
        self.etcd.txn([txn.value_is(STAT + name, CREATING)], [txn.delete_op(key) for key in keys(name)])

    def adopt(self, name, info):
        """A base volume without metadata becomes a shared volume again (Ready)."""
        self.etcd.txn([txn.absent(STAT + name)],
                      [txn.put_op(STAT + name, READY), txn.put_op(INFO + name, json.dumps(info))]
                      + [txn.put_op(key, "0") for key in keys(name)[2:]])

    def delete(self, name):
        """Remove a volume's metadata (no node mounts it)."""
        self.etcd.txn([], [txn.delete_op(key) for key in keys(name)])

    # -- a node's mounts ----------------------------------------------------------------------

    def mount(self, name, node, address, lease):
        """Record the node's mount (durable) and that it is alive (its lease)."""
        self.etcd.txn([], [txn.put_op(f"{MOUNT}{name}_{node}", json.dumps({"address": address})),
                           txn.put_op(f"{CLIENT}{name}_{node}", address, lease)])

    def alive_again(self, name, node, address, lease):
        """The node's live key, under a new lease (its mount record is kept)."""
        self.etcd.put(f"{CLIENT}{name}_{node}", address, lease)

    def unmount(self, name, node):
        """The node's own unmount: its record and its live key go."""
        self.etcd.txn([], [txn.delete_op(f"{MOUNT}{name}_{node}"), txn.delete_op(f"{CLIENT}{name}_{node}")])

    def mark_unreachable(self, name, node, record, since):
        """Note, once, since when a node that mounts the volume is out of reach."""
        self._rewrite(name, node, record, dict(record, unreachable=since))

    def mark_reachable(self, name, node, record):
        self._rewrite(name, node, record, {k: v for k, v in record.items() if k != "unreachable"})

    def _rewrite(self, name, node, record, new):
        """A node's mount record ``record`` becomes ``new``, unless it changed meanwhile."""
        key = f"{MOUNT}{name}_{node}"
        self.etcd.txn([txn.value_is(key, json.dumps(record))], [txn.put_op(key, json.dumps(new))])

    def drop_node(self, name, node):
        """A node the swarm reports dead: its mount of the volume stops counting."""
        self.unmount(name, node)

    # -- its file server ------------------------------------------------------------------------

    def server_started(self, name, state, details):
        """Ready -> Mounted with the server's address (unless the state moved)."""
        done, _ = self.etcd.txn([txn.value_is(STAT + name, state)],
                                [txn.put_op(INFO + name, json.dumps(details)), txn.put_op(STAT + name, MOUNTED)])
        return done

    def server_stopped(self, name):
        """Mounted -> Ready, the server's address forgotten."""
        info = self.etcd.get(INFO + name)
        if info is None:
            return
        details = {k: v for k, v in json.loads(info).items() if k not in ("address", "port", "serviceName")}
        self.etcd.txn([txn.present(STAT + name)], [txn.put_op(STAT + name, READY),
                                                   txn.put_op(INFO + name, json.dumps(details))])

    def server_moved(self, name, info, address, port):
        """Record where swarm runs the server now; False if the info changed meanwhile."""
        details = dict(json.loads(info), address=address, port=port)
        moved, _ = self.etcd.txn([txn.value_is(INFO + name, info)], [txn.put_op(INFO + name, json.dumps(details))])
        return moved

    def take_event(self, marker, name, value):
        """Whether this manager handles a trigger's event (it moved the marker)."""
        won, _ = self.etcd.txn([txn.value_is_not(marker + name, value)], [txn.put_op(marker + name, value)])
        return won

    def missed_events(self):
        """(trigger, volume, value) of every trigger its marker does not match."""
        markers = {k.key: k.value for k in self.etcd.range("SVOLS_st", prefix=True)}
        missed = []
        for key, value in markers.items():
            for trigger, marker in ((START, START_MARK), (STOP, STOP_MARK)):
                if key.startswith(trigger):
                    name = key[len(trigger):]
                    if markers.get(marker + name) not in (None, value):
                        missed.append((trigger, name, value))
        return missed

    # -- counters and waits -----------------------------------------------------------------------

    def increment(self, key):
        deadline = time.monotonic() + INCREMENT_FOR
        while True:
            found = self.etcd.range(key)
            if not found:
                raise DriverError(f"AtomicIncr: no key found for {key}")
            value = str(int(found[0].value or 0) + 1)
            done, _ = self.etcd.txn([txn.value_is(key, found[0].value)], [txn.put_op(key, value)])
            if done:
                return value
            if time.monotonic() > deadline:
                raise DriverError("Timeout reached; AtomicIncr is not complete")

    def wait_for(self, name, state, trigger):
        """The info of a volume once its state is ``state``, after moving
        ``trigger`` (START or STOP). The trigger is moved again every
        ``retrigger`` seconds meanwhile: the manager that took the event may
        have failed (swarm without a leader for a moment after a lost quorum)."""
        deadline = time.monotonic() + self.timeout + WAIT_MARGIN
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


def _record(value):
    try:
        record = json.loads(value)
    except ValueError:
        return {"address": value}
    return record if isinstance(record, dict) else {"address": value}
