"""What the plugins of the swarm's managers do for every node (only a
manager can run swarm services): start a volume's file server when its
start trigger moves, stop it when its stop trigger moves and no node uses
it (one manager wins each event by moving the trigger's marker), record
where swarm runs a server that it moved, and stop the servers nobody needs."""

import json
import logging
import queue
import threading
import time

from ..docker_api import DockerError, DockerUnavailable
from ..refcount import DriverError
from .etcd import EtcdError
from .fileserver import ServerFailed, service_name
from .state import MOUNTED, START, START_MARK, STOP, STOP_MARK

log = logging.getLogger("vmdkops.plugin")
SERVER_CHECK = 2
TRIGGER_WORKERS = 8  # file servers started or stopped at once; more events wait their turn


class Managers:
    def __init__(self, node):
        self.node = node
        self.etcd, self.store, self.servers = node.etcd, node.store, node.servers
        self.active = False
        # Each start makes a new term and each stop ends it: the loops of an
        # earlier term end at their next turn, so a quick demote and promote
        # never leaves two watchers of the triggers.
        self._term, self._term_guard = 0, threading.Lock()
        self._events = queue.Queue()  # (handler, volume, trigger value), for the workers
        self._workers = []
        self._down_since = {}  # node -> when this manager first saw the swarm report it down

    def _settle_unreachable(self):
        """Mount records of nodes out of reach say since when; those of nodes
        the swarm has reported down (or removed) for longer than the grace
        period are dropped: such a node is dead for shared volumes."""
        mounted, alive = self.store.mounted(), self.store.alive()
        if not mounted:
            return
        down = self._down_for(mounted)
        now = time.time()
        for name, nodes in mounted.items():
            for node, record in nodes.items():
                if (name, node) in alive:
                    if record.get("unreachable"):
                        self.store.mark_reachable(name, node, record)
                elif down.get(node, 0) > self.node.config.DeadNodeGrace:
                    log.warning("Node %s has been down for %.0f s: its mount of %s no longer counts",
                                node, down[node], name)
                    self.store.drop_node(name, node)
                elif not record.get("unreachable"):
                    self.store.mark_unreachable(name, node, record, now)

    def _down_for(self, mounted):
        """Node -> seconds since this manager first saw the swarm report it down,
        or saw a node that mounts a volume missing from the swarm."""
        nodes = {n["ID"]: (n.get("Status") or {}).get("State") for n in self.node.docker.get("/nodes")}
        down = {node for node, state in nodes.items() if state == "down"}
        down |= {node for records in mounted.values() for node in records if node not in nodes}
        now = time.monotonic()
        self._down_since = {node: self._down_since.get(node, now) for node in down}
        return {node: now - since for node, since in self._down_since.items()}

    def start(self):
        """This node is a manager (at start, or promoted)."""
        with self._term_guard:
            self._term += 1
            term, self.active = self._term, True
        if not self._workers:  # once: they outlive a demotion
            self._workers = [threading.Thread(target=self._work, name=f"trigger-{i}", daemon=True)
                             for i in range(1, TRIGGER_WORKERS + 1)]
            for worker in self._workers:
                worker.start()
        threading.Thread(target=self._watch_triggers, args=(term,), name="watch", daemon=True).start()
        threading.Thread(target=self._check_servers, args=(term,), name="servers-check", daemon=True).start()

    def stop(self):
        """This node was demoted: the watch ends (the nodes' watches start again)."""
        with self._term_guard:
            self._term += 1
            self.active = False
        self.etcd.close_watches()

    def _running(self, term):
        return self._term == term and not self.node.stopping.is_set()

    # -- the triggers -------------------------------------------------------------------------------

    def _watch_triggers(self, term):
        """Watch the start and stop triggers; after each (re)connection, first
        handle what was missed (a trigger its marker does not match)."""
        while self._running(term):
            try:
                revision = self.etcd.revision() + 1
                self._catch_up()
                while self._running(term):
                    revision = self.etcd.watch("SVOLS_st", revision, lambda *event: self._running(term) and
                                               self._on_event(*event))
                    if self._running(term):
                        self.node.stopping.wait(1)
                        self._catch_up()
            except EtcdError as exc:
                log.warning("Watching the triggers failed: %s", exc)
                self.node.stopping.wait(1)

    def _catch_up(self):
        for trigger, name, value in self.store.missed_events():
            self._handle(trigger, name, value)

    def _on_event(self, kind, item, previous):
        if kind != "PUT" or previous is None:
            return
        for trigger in (START, STOP):
            if item.key.startswith(trigger):
                self._handle(trigger, item.key[len(trigger):], item.value)

    def _handle(self, trigger, name, value):
        self._events.put((self._start_server if trigger == START else self._stop_server, name, value))

    def _work(self):
        while True:
            handler, name, value = self._events.get()
            try:
                handler(name, value)
            except Exception:  # noqa: BLE001 - a worker outlives what it handles
                log.exception("Handling a trigger of %s failed", name)

    def _won(self, marker, name, value):
        """Whether this manager handles an event: it is a manager now (a node
        demoted a moment ago learns it in the helper loop) and moved the marker."""
        if not self.node.cluster.is_manager(fresh=True):
            return False
        return self.store.take_event(marker, name, value)

    def _start_server(self, name, value):
        try:
            if not self._won(START_MARK, name, value):
                return
            unlock = self.node.server_lock(name)
        except (EtcdError, DriverError) as exc:
            log.error("Failed to start SMB server for %s: %s", name, exc)
            return
        try:
            snapshot = self.store.snapshot(name)
            if snapshot is None or not snapshot.info:
                return
            if snapshot.state == MOUNTED and self.servers.find(name) is not None:
                log.info("Volume is already in desired state Mounted name=%s", name)
                return
            details = dict(snapshot.info)
            address, port = self.servers.start(name, details["username"], details["password"],
                                               self.node.timeout)
            details.update(address=address, port=port, serviceName=service_name(name))
            if not self.store.server_started(name, snapshot.state, details):
                log.error("Failed to update state of %s from Ready to Mounted", name)
        except (EtcdError, ServerFailed, DockerError, DockerUnavailable, DriverError, KeyError) as exc:
            log.error("Failed to start SMB server for %s: %s", name, exc)
        finally:
            unlock()

    def _stop_server(self, name, value):
        try:
            if not self._won(STOP_MARK, name, value):
                return
            # The mounts' lock first: a node that is mounting holds it until
            # its record is in, so no server is stopped under it.
            unlock_mounts = self.node.lock(name)
        except (EtcdError, DriverError) as exc:
            log.error("Failed to stop SMB server for %s: %s", name, exc)
            return
        try:
            unlock = self.node.server_lock(name)
            try:
                if self.store.mounts_of(name):
                    log.info("Volume %s still has global users, cannot stop the server", name)
                    return
                self.servers.stop(name, self.node.timeout)
                self.store.server_stopped(name)
            finally:
                unlock()
        except (EtcdError, ServerFailed, DockerError, DockerUnavailable, DriverError, ValueError) as exc:
            log.error("Failed to stop SMB server for %s: %s", name, exc)
        finally:
            unlock_mounts()

    # -- servers that moved, servers nobody needs -------------------------------------------------------

    def _check_servers(self, term):
        """Every SERVER_CHECK seconds: a file server that swarm started again
        on another node (its node died) has its new address and port put in
        SVOLS_info, which the clients' relays follow; an etcd member this
        node cannot name yet is named."""
        while not self.node.stopping.wait(SERVER_CHECK) and self._running(term):
            try:
                if not self.node.cluster.is_manager():
                    continue  # demoted: the helper loop will see it
                if not self.node.config.EtcdEndpoints:
                    self.node.cluster.name_members(self.etcd)
                for name, state in self.store.states().items():
                    if state == MOUNTED:
                        self._follow_server(name)
            except (EtcdError, DockerError, DockerUnavailable, ValueError) as exc:
                log.warning("Checking the file servers failed: %s", exc)

    def _follow_server(self, name):
        info = self.store.info_text(name)
        service = self.servers.find(name)
        if info is None or service is None:
            return
        found = self.servers.running(service["ID"])
        details = json.loads(info)
        if found is None or found == (details.get("address"), details.get("port")):
            return
        if self.store.server_moved(name, info, *found):
            log.info("The file server of %s moved to %s:%s", name, *found)

    def collect(self):
        """(The helper loop's, on a manager.) Note the mounts of nodes out of
        reach; drop those of nodes the swarm has reported down for longer than
        ``DeadNodeGrace``; stop the file servers no node uses any more and
        those whose volume is gone."""
        self._settle_unreachable()
        states, mounted = self.store.states(), self.store.mounted()
        for name, state in states.items():
            if state == MOUNTED and name not in mounted:
                log.info("No node uses %s any more: its file server stops", name)
                self.store.increment(STOP + name)
        for name in self.servers.volumes_served():
            if name not in states:
                log.info("The service for VSSD volume %s needs to be shutdown.", name)
                self.servers.stop(name, self.node.timeout)
