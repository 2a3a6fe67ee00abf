"""What the plugins of the swarm's managers do for every node (only a
manager can run swarm services): start a volume's file server when its
start trigger moves, stop it when its stop trigger moves and no node uses
it (one manager wins each event by moving the trigger's marker), record
where swarm runs a server that it moved, and stop the servers nobody needs."""

import json
import logging
import threading

from ..docker_api import DockerError, DockerUnavailable
from ..refcount import DriverError
from . import etcd as kv
from .etcd import EtcdError
from .fileserver import ServerFailed, service_name
from .state import INFO, MOUNTED, READY, START, START_MARK, STAT, STOP, STOP_MARK, clients

log = logging.getLogger("vmdkops.plugin")
SERVER_CHECK = 2


class Managers:
    def __init__(self, driver):
        self.driver = driver
        self.etcd, self.store, self.servers = driver.etcd, driver.store, driver.servers
        self.active = False

    def start(self):
        """This node is a manager (at start, or promoted)."""
        self.active = True
        threading.Thread(target=self._watch_triggers, name="watch", daemon=True).start()
        threading.Thread(target=self._check_servers, name="servers-check", daemon=True).start()

    def stop(self):
        """This node was demoted: the watch ends (the nodes' watches start again)."""
        self.active = False
        self.etcd.close_watches()

    def _running(self):
        return self.active and not self.driver.stopping.is_set()

    # -- the triggers -------------------------------------------------------------------------------

    def _watch_triggers(self):
        """Watch the start and stop triggers; after each (re)connection, first
        handle what was missed (a trigger its marker does not match)."""
        while self._running():
            try:
                revision = self.etcd.revision() + 1
                self._catch_up()
                while self._running():
                    revision = self.etcd.watch("SVOLS_st", revision, self._on_event)
                    if self._running():
                        self.driver.stopping.wait(1)
                        self._catch_up()
            except EtcdError as exc:
                log.warning("Watching the triggers failed: %s", exc)
                self.driver.stopping.wait(1)

    def _catch_up(self):
        markers = {k.key: k.value for k in self.etcd.range("SVOLS_st", prefix=True)}
        for key, value in markers.items():
            for trigger, marker in ((START, START_MARK), (STOP, STOP_MARK)):
                if key.startswith(trigger):
                    name = key[len(trigger):]
                    if markers.get(marker + name) not in (None, value):
                        self._handle(trigger, name, value)

    def _on_event(self, kind, item, previous):
        if kind != "PUT" or previous is None:
            return
        for trigger in (START, STOP):
            if item.key.startswith(trigger):
                self._handle(trigger, item.key[len(trigger):], item.value)

    def _handle(self, trigger, name, value):
        threading.Thread(target=self._start_server if trigger == START else self._stop_server,
                         args=(name, value), name=f"{trigger}{name}", daemon=True).start()

    def _won(self, marker, name, value):
        """Whether this manager handles an event: it is a manager now (a node
        demoted a moment ago learns it in the helper loop) and moved the marker."""
        if not self.driver.cluster.is_manager(fresh=True):
            return False
        won, _ = self.etcd.txn([kv.value_is_not(marker + name, value)], [kv.put(marker + name, value)])
        return won

    def _start_server(self, name, value):
        try:
            if not self._won(START_MARK, name, value):
                return
            unlock = self.driver.lock(name, "stat")
        except (EtcdError, DriverError) as exc:
            log.error("Failed to start SMB server for %s: %s", name, exc)
            return
        try:
            _, (stat, info) = self.etcd.txn([], [kv.get(STAT + name), kv.get(INFO + name)])
            if not stat or not info:
                return
            details = json.loads(info[0].value)
            if stat[0].value == MOUNTED and self.servers.find(name) is not None:
                log.info("Volume is already in desired state Mounted name=%s", name)
                return
            address, port = self.servers.start(name, details["username"], details["password"],
                                               self.driver.timeout)
            details.update(address=address, port=port, serviceName=service_name(name))
            done, _ = self.etcd.txn([kv.value_is(STAT + name, stat[0].value)],
                                    [kv.put(INFO + name, json.dumps(details)), kv.put(STAT + name, MOUNTED)])
            if not done:
                log.error("Failed to update state of %s from Ready to Mounted", name)
        except (EtcdError, ServerFailed, DockerError, DockerUnavailable, KeyError, ValueError) as exc:
            log.error("Failed to start SMB server for %s: %s", name, exc)
        finally:
            unlock()

    def _stop_server(self, name, value):
        try:
            if not self._won(STOP_MARK, name, value):
                return
            # The mounts' lock first: a node that is mounting holds it until
            # its client key is in, so no server is stopped under it.
            unlock_mounts = self.driver.lock(name)
        except (EtcdError, DriverError) as exc:
            log.error("Failed to stop SMB server for %s: %s", name, exc)
            return
        try:
            unlock = self.driver.lock(name, "stat")
            try:
                if self.etcd.range(clients(name), prefix=True):
                    log.info("Volume %s still has global users, cannot stop the server", name)
                    return
                self.servers.stop(name, self.driver.timeout)
                info = self.etcd.get(INFO + name)
                if info is not None:
                    details = json.loads(info)
                    for key in ("address", "port", "serviceName"):
                        details.pop(key, None)
                    self.etcd.txn([kv.present(STAT + name)], [kv.put(STAT + name, READY),
                                                              kv.put(INFO + name, json.dumps(details))])
            finally:
                unlock()
        except (EtcdError, ServerFailed, DockerError, DockerUnavailable, DriverError, ValueError) as exc:
            log.error("Failed to stop SMB server for %s: %s", name, exc)
        finally:
            unlock_mounts()

    # -- servers that moved, servers nobody needs -------------------------------------------------------

    def _check_servers(self):
        """Every SERVER_CHECK seconds: a file server that swarm started again
        on another node (its node died) has its new address and port put in
        SVOLS_info, which the clients' relays follow; an etcd member this
        node cannot name yet is named."""
        while not self.driver.stopping.wait(SERVER_CHECK) and self.active:
            try:
                if not self.driver.cluster.is_manager():
                    continue  # demoted: the helper loop will see it
                if not self.driver.config.EtcdEndpoints:
                    self.driver.cluster.name_members(self.etcd)
                for name, state in self.store.states().items():
                    if state == MOUNTED:
                        self._follow_server(name)
            except (EtcdError, DockerError, DockerUnavailable, ValueError) as exc:
                log.warning("Checking the file servers failed: %s", exc)

    def _follow_server(self, name):
        info = self.etcd.get(INFO + name)
        service = self.servers.find(name)
        if info is None or service is None:
            return
        found = self.servers.running(service["ID"])
        details = json.loads(info)
        if found is None or found == (details.get("address"), details.get("port")):
            return
        details.update(address=found[0], port=found[1])
        moved, _ = self.etcd.txn([kv.value_is(INFO + name, info)], [kv.put(INFO + name, json.dumps(details))])
        if moved:
            log.info("The file server of %s moved to %s:%s", name, *found)

    def collect(self):
        """(The helper loop's, on a manager.) Stop the file servers no node uses
        any more (their last client died) and those whose volume is gone."""
        states, used = self.store.states(), self.store.used()
        for name, state in states.items():
            if state == MOUNTED and name not in used:
                log.info("No node uses %s any more: its file server stops", name)
                self.store.increment(STOP + name)
        for name in self.servers.volumes_served():
            if name not in states:
                log.info("The service for VSSD volume %s needs to be shutdown.", name)
                self.servers.stop(name, self.driver.timeout)
