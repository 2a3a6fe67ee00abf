"""The vfile driver (spec plugin PART B, DESIGN D11-D14): a shared volume
``<v>`` is a base volume ``_vF_<v>`` of the internal driver, served over SMB
by the swarm service ``vFileServer<v>`` while any node mounts it, and its
state is kept in etcd under the original's keys:

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

Changes from the original (D12): create is create-if-absent; the global
refcount is the number of live client keys (no SVOLS_gref_ key: a dead
node's mounts expire with its lease); locks are lease-bound mutexes;
names are checked at create; Remove is refused while any node mounts."""

import json
import logging
import re
import secrets
import threading
import time

from .. import fs
from ..docker_api import Docker, DockerError, DockerUnavailable, quote
from ..refcount import DriverError, RefcountedDriver
from . import etcd as kv
from .cluster import Cluster, NotReady
from .etcd import EtcdError
from .fileserver import FileServers, ServerFailed, base_volume, service_name
from .relay import Relays
from .smb import MountFailed, method

log = logging.getLogger("vmdkops.plugin")

STAT, INFO, CLIENT = "SVOLS_stat_", "SVOLS_info_", "SVOLS_client_"
START, STOP = "SVOLS_start_trigger_", "SVOLS_stop_trigger_"
START_MARK, STOP_MARK = "SVOLS_start_marker_", "SVOLS_stop_marker_"
CREATING, READY, MOUNTED = "Creating", "Ready", "Mounted"
NOT_INITIALIZED = "VSSD volume driver is not fully initialized yet."
USER = "vfile"
LEASE_TTL = 10
HELPER_INTERVAL = 15
SERVER_CHECK = 2
# A DNS name component: the name is part of the service's name, vFileServer<v>
# (at most 63 characters).
NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,50}[A-Za-z0-9])?$")


def check_name(name):
    if not NAME.match(name or ""):
        raise DriverError(
            f"Invalid volume name '{name}': the name of a shared volume is part of its file server's "
            "DNS name, so it may have only letters, digits and '-', must start and end with a letter "
            "or digit, and have at most 52 characters")


def _keys(volume):
    return [STAT + volume, INFO + volume, START + volume, STOP + volume, START_MARK + volume,
            STOP_MARK + volume]


class VfileDriver(RefcountedDriver):
    ERRORS = (DriverError, fs.FsError, OSError, EtcdError, DockerError, DockerUnavailable, MountFailed)

    def __init__(self, config):
        super().__init__(config)
        self.docker = Docker(config.DockerSocket)
        self.cluster = Cluster(config, self.docker)
        self.etcd = self.cluster.etcd()
        self.servers = FileServers(self.docker, config)
        self.mounter = method(config.MountMethod, config.StateDir)
        self.relays = Relays(config.StateDir)
        self.manager = False
        self.initialized = threading.Event()
        self.stopping = threading.Event()
        self.lease = None

    @property
    def timeout(self):
        return self.config.ServiceTimeout

    # -- start-up -------------------------------------------------------------------------

    def start(self):
        """Connect to (or start) etcd, then take the node's lease, watch the
        triggers on a manager, and rebuild the mount counts."""
        threading.Thread(target=self._prepare_node, name="image", daemon=True).start()
        delay = 0.5
        while not self.stopping.is_set():
            try:
                self.cluster.start()
                self.lease = self.etcd.grant(LEASE_TTL)
                break
            except (EtcdError, NotReady, DockerError, DockerUnavailable, OSError) as exc:
                log.warning("Failed to create new KV store. Retry: %s", exc)
                self.stopping.wait(delay)
                delay = min(delay * 2, 5)
        if self.stopping.is_set():
            return
        threading.Thread(target=self._keep_lease, name="lease", daemon=True).start()
        self.manager = self.cluster.is_manager()
        if self.manager:
            self._start_manager_threads()
        threading.Thread(target=self._follow_servers, name="servers", daemon=True).start()
        self.initialized.set()
        log.info("VSSD plugin is initialized: node=%s address=%s manager=%s etcd=%s",
                 self.cluster.node_id, self.cluster.address, self.manager, ",".join(self.cluster.endpoints()))
        if self.recover():
            self._reconcile_clients()
            for name in self.relays.volumes():
                if not self.users(name):
                    self.relays.stop(name)  # of a mount that ended while the plugin was down
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

    def _keep_lease(self):
        """Renew the node's lease; if it expired (etcd was out of reach for
        longer than its TTL), take a new one and put this node's client keys
        back under it."""
        while not self.stopping.wait(LEASE_TTL / 3):
            try:
                if self.etcd.keepalive(self.lease) > 0:
                    continue
                self.lease = self.etcd.grant(LEASE_TTL)
                log.warning("The node's etcd lease had expired; mounts registered again")
                for volume in list(self.counts):
                    self._register(volume)
            except EtcdError as exc:
                log.warning("Could not renew the node's etcd lease: %s", exc)

    def stop(self):
        self.stopping.set()
        self.etcd.close_watches()
        if self.lease is not None:
            try:
                self.etcd.revoke(self.lease)
            except EtcdError:
                pass
        if not self.config.EtcdEndpoints:
            self.cluster.stop()

    def _initialized(self):
        if not self.initialized.is_set():
            raise DriverError(NOT_INITIALIZED)

    # -- Create and Remove ----------------------------------------------------------------

    def create(self, name, opts):
        self._initialized()
        check_name(name)
        opts = {str(k): str(v) for k, v in (opts or {}).items()}
        info = {"username": USER, "password": secrets.token_urlsafe(18), "opts": opts}
        made, ranges = self.etcd.txn(
            [kv.absent(STAT + name)],
            [kv.put(STAT + name, CREATING), kv.put(INFO + name, json.dumps(info))]
            + [kv.put(key + name, "0") for key in (START, STOP, START_MARK, STOP_MARK)],
            [kv.get(INFO + name)])
        if not made:
            stored = json.loads(ranges[0][0].value).get("opts", {}) if ranges and ranges[0] else {}
            if stored == opts:
                return
            raise DriverError(f"Volume {name} already exists with different options")
        try:
            self.docker.post("/volumes/create", {"Name": base_volume(name), "Driver": self.config.InternalDriver,
                                                 "DriverOpts": opts})
        except (DockerError, DockerUnavailable) as exc:
            self._forget(name)
            raise DriverError(f"Failed to create internal volume {name}. Reason: {exc}. Check the status "
                              f'of the volumes belonging to driver "{self.config.InternalDriver}".') from None
        done, _ = self.etcd.txn([kv.value_is(STAT + name, CREATING)], [kv.put(STAT + name, READY)])
        if not done:
            raise DriverError(f"Failed to set status of volume {name} to ready. Reason: it was removed "
                              "while it was being created")

    def _forget(self, name):
        self.etcd.txn([kv.value_is(STAT + name, CREATING)], [kv.delete(key) for key in _keys(name)])

    def remove(self, name):
        self._initialized()
        if not self.ready.is_set():
            raise DriverError(f"Plugin initialization in progress. Cannot remove volume {name}")
        if self.users(name):
            raise DriverError(f"Remove failed: Containers on this host VM are still using volume {name}.")
        deadline = time.monotonic() + self.timeout
        while True:
            unlock = self._lock(name)
            try:
                _, (stat, clients) = self.etcd.txn(
                    [], [kv.get(STAT + name), kv.get(CLIENT + name + "_", prefix=True)])
                if not stat:
                    return  # gone already
                if clients:
                    raise DriverError(f"Remove failed: volume {name} is mounted on node(s) "
                                      f"{', '.join(sorted(c.value for c in clients))}")
                if stat[0].value != MOUNTED:
                    self._delete_base(name)
                    self.etcd.txn([], [kv.delete(key) for key in _keys(name)])
                    return
            finally:
                unlock()
            # A file server runs with no user: the managers stop it (they
            # need the lock this loop just let go).
            if time.monotonic() > deadline:
                raise DriverError(f"Remove failed: the file server of volume {name} did not stop")
            self._increment(STOP + name)
            self._wait_for(name, READY)

    def _delete_base(self, name):
        """Delete the base volume; the file server's task may still hold it a moment."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                self.docker.delete(f"/volumes/{quote(base_volume(name))}")
                return
            except DockerError as exc:
                if exc.status == 404:
                    return
                if time.monotonic() > deadline:
                    raise DriverError(f"Failed to remove the base volume {base_volume(name)} of {name}: "
                                      f"{exc}") from None
            time.sleep(0.5)

    # -- Mount and Unmount ------------------------------------------------------------------

    def mount(self, name, mount_id):
        self._initialized()
        return super().mount(name, mount_id)

    def unmount(self, name, mount_id):
        self._initialized()
        return super().unmount(name, mount_id)

    def unknown_mount(self, name, mount_id):
        if self.users(name):  # counted by recovery after a restart, which cannot know the IDs
            return name
        raise DriverError(f"Unable to find volume {name}.")

    def mount_volume(self, name, context=None):
        before = self.etcd.requests()
        unlock = self._lock(name)
        try:
            _, (stat, info) = self.etcd.txn([], [kv.get(STAT + name), kv.get(INFO + name)])
            if not stat:
                raise DriverError("No such volume")
            if stat[0].value != MOUNTED:
                self._increment(START + name)
                info = self._wait_for(name, MOUNTED)
            else:
                info = json.loads(info[0].value)
            try:
                port = self.relays.point(name, info["address"], info["port"])
                self.mounter.mount(name, self.target(name), "127.0.0.1", port, info["username"],
                                   info["password"], time.monotonic() + self.timeout)
            except (MountFailed, OSError) as exc:
                log.error("Mount of %s failed: %s", name, exc)
                self.relays.stop(name)
                raise DriverError(f"Failed to mount VSSD volume {name} after timeout") from None
            self._register(name)
        except BaseException:
            self._release_server(name)
            raise
        finally:
            unlock()
        log.info("Mounted name=%s address=%s port=%s etcd_requests=%d", name, info["address"], info["port"],
                 self.etcd.requests() - before)

    def _register(self, name):
        self.etcd.put(f"{CLIENT}{name}_{self.cluster.node_id}", self.cluster.address, self.lease)

    def _release_server(self, name):
        """After this node stopped using a volume: if no node uses it, ask
        the managers to stop its file server (they check again, locked)."""
        try:
            if not self.etcd.range(CLIENT + name + "_", prefix=True):
                self._increment(STOP + name)
        except EtcdError as exc:
            log.warning("Could not ask for the file server of %s to stop: %s", name, exc)

    def unmount_volume(self, name):
        before = self.etcd.requests()
        self.mounter.unmount(name, self.target(name))
        self.relays.stop(name)
        unlock = self._lock(name)
        try:
            self.etcd.delete(f"{CLIENT}{name}_{self.cluster.node_id}")
            self._release_server(name)
        finally:
            unlock()
        log.info("Unmounted name=%s etcd_requests=%d", name, self.etcd.requests() - before)

    def recover_in_use(self, name):
        self._register(name)

    # -- Get, List, Path ----------------------------------------------------------------------

    def get(self, name):
        self._initialized()
        _, (stat, info, clients) = self.etcd.txn([], [kv.get(STAT + name), kv.get(INFO + name),
                                                      kv.get(CLIENT + name + "_", prefix=True)])
        if not stat:
            raise DriverError("No such volume")
        try:
            details = json.loads(info[0].value) if info else {}
        except ValueError as exc:
            raise DriverError(f"Failed to unmarshal data. {exc}") from None
        status = {"Volume Status": stat[0].value, "Global Refcount": len(clients),
                  "File server Port": details.get("port") or 0,
                  "Service name": details.get("serviceName") or "",
                  "Clients": sorted(c.value for c in clients) or None}
        return {"Name": name, "Mountpoint": self.path(name), "Status": status}

    def list(self):
        self._initialized()
        names = sorted(k.key[len(STAT):] for k in self.etcd.range(STAT, prefix=True) if "/" not in k.key)
        return [{"Name": name, "Mountpoint": self.path(name)} for name in names]

    def path(self, name):
        return self.mountpoint(name) if self.users(name) else ""

    # -- etcd helpers ---------------------------------------------------------------------------

    def _lock(self, name, which="gref"):
        key = f"SVOLS_{which}_{name}-lock"
        return self.etcd.lock(key, self.lease, self.timeout + 20)

    def _increment(self, key):
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

    def _wait_for(self, name, state):
        """The info of a volume once its state is ``state``."""
        if not self.etcd.wait_until(STAT + name, state, self.timeout + 10):
            raise DriverError("No such volume")
        info = self.etcd.get(INFO + name)
        if info is None:
            raise DriverError("No such volume")
        return json.loads(info)

    # -- this node: its registrations, and where the servers of its mounts are ---------------------

    def _reconcile_clients(self):
        """After a restart: this node's client keys are the volumes mounted
        here, no more (a key of a mount that ended while the plugin was down
        goes) and no fewer (a mount that outlived the old lease comes back)."""
        mine = f"_{self.cluster.node_id}"
        for item in self.etcd.range(CLIENT, prefix=True):
            name = item.key[len(CLIENT):-len(mine)] if item.key.endswith(mine) else None
            if name is not None and not self.users(name):
                log.info("Dropping the stale registration of %s on this node", name)
                self.etcd.delete(item.key)
                self._release_server(name)

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
            info = self.etcd.get(INFO + name)
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

    # -- the helper loop: roles, dead nodes, orphans ------------------------------------------------

    def _helper(self):
        """Every HELPER_INTERVAL seconds: follow this node's swarm role (a
        promoted node joins the etcd cluster, a demoted one leaves it) and, on
        a manager, stop the file servers nobody uses any more (their last
        client was a node that died) or whose volume is gone."""
        while not self.stopping.wait(HELPER_INTERVAL):
            try:
                self._follow_role()
                if self.manager:
                    self._collect()
            except (EtcdError, NotReady, DockerError, DockerUnavailable, DriverError, OSError) as exc:
                log.warning("Helper loop: %s", exc)

    def _follow_role(self):
        manager = self.cluster.is_manager(fresh=True)
        if manager and not self.manager:
            log.info("Node is promoted to manager, prepare to join ETCD cluster")
            if not self.config.EtcdEndpoints:
                self.cluster.start_member()
            self.manager = True
            self._start_manager_threads()
        elif self.manager and not manager:
            log.info("Node is demoted from manager to worker, prepare to leave ETCD cluster")
            self.manager = False
            self.etcd.close_watches()  # the trigger watch ends; the others start again
            if not self.config.EtcdEndpoints:
                self.cluster.leave()
                log.info("Stopped ETCD service due to demotion")

    def _collect(self):
        _, (states, clients) = self.etcd.txn([], [kv.get(STAT, prefix=True), kv.get(CLIENT, prefix=True)])
        used = {item.key[len(CLIENT):].rpartition("_")[0] for item in clients}
        states = {item.key[len(STAT):]: item.value for item in states if "/" not in item.key}
        for name, state in states.items():
            if state == MOUNTED and name not in used:
                log.info("No node uses %s any more: its file server stops", name)
                self._increment(STOP + name)
        for name in self.servers.volumes_served():
            if name not in states:
                log.info("The service for VSSD volume %s needs to be shutdown.", name)
                self.servers.stop(name, self.timeout)

    # -- the managers: starting and stopping file servers -------------------------------------------

    def _start_manager_threads(self):
        threading.Thread(target=self._watch_triggers, name="watch", daemon=True).start()
        threading.Thread(target=self._check_servers, name="servers-check", daemon=True).start()

    def _check_servers(self):
        """Every SERVER_CHECK seconds: a file server that swarm started again
        on another node (its node died) has its new address and port put in
        SVOLS_info, which the clients' relays follow."""
        while not self.stopping.wait(SERVER_CHECK) and self.manager:
            try:
                if not self.cluster.is_manager():
                    continue  # demoted: the helper loop will see it
                for item in self.etcd.range(STAT, prefix=True):
                    if "/" not in item.key and item.value == MOUNTED:
                        self._follow_server(item.key[len(STAT):])
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

    def _watch_triggers(self):
        """Watch the start and stop triggers; after each (re)connection, first
        handle what was missed (a trigger its marker does not match)."""
        while not self.stopping.is_set() and self.manager:
            try:
                revision = self.etcd.revision() + 1
                self._catch_up()
                while not self.stopping.is_set() and self.manager:
                    revision = self.etcd.watch("SVOLS_st", revision, self._on_event)
                    if not self.stopping.is_set() and self.manager:
                        self.stopping.wait(1)
                        self._catch_up()
            except EtcdError as exc:
                log.warning("Watching the triggers failed: %s", exc)
                self.stopping.wait(1)

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
        if not self.cluster.is_manager(fresh=True):
            return False
        won, _ = self.etcd.txn([kv.value_is_not(marker + name, value)], [kv.put(marker + name, value)])
        return won

    def _start_server(self, name, value):
        try:
            if not self._won(START_MARK, name, value):
                return
            unlock = self._lock(name, "stat")
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
            address, port = self.servers.start(name, details["username"], details["password"], self.timeout)
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
            unlock_mounts = self._lock(name)
        except (EtcdError, DriverError) as exc:
            log.error("Failed to stop SMB server for %s: %s", name, exc)
            return
        try:
            unlock = self._lock(name, "stat")
            try:
                if self.etcd.range(CLIENT + name + "_", prefix=True):
                    log.info("Volume %s still has global users, cannot stop the server", name)
                    return
                self.servers.stop(name, self.timeout)
                _, (info,) = self.etcd.txn([], [kv.get(INFO + name)])
                details = json.loads(info[0].value) if info else None
                if details is not None:
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
