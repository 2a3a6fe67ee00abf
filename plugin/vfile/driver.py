"""The vfile driver (spec plugin PART B, DESIGN D11-D14): a shared volume
``<v>`` is a base volume ``_vF_<v>`` of the internal driver, served over SMB
by the swarm service ``vFileServer<v>`` while any node mounts it, its state
in etcd (``state``). This module is Docker's volume operations on a node.
The parts they use are in ``node``, the node's mount records in etcd in
``records``, the start-up, stop and background loops in ``background``,
and the managers' own work in ``managers``.

Changes from the original (D12): create is create-if-absent; the global
refcount is the number of live client keys; locks are lease-bound
mutexes; names are checked at create; Remove is refused while any node
mounts."""

import logging
import os
import secrets
import time

from .. import fs
from ..docker_api import DockerError, DockerUnavailable, quote
from ..refcount import DriverError, RefcountedDriver
from .background import Background
from .etcd import EtcdError
from .fileserver import base_volume
from .node import Node
from .records import MountRecords
from .relays import Relays
from .smb import MountFailed, method
from .state import MOUNTED, READY, START, STOP, USER, check_name

log = logging.getLogger("vmdkops.plugin")
NOT_INITIALIZED = "VSSD volume driver is not fully initialized yet."


class VfileDriver(RefcountedDriver):
    ERRORS = (DriverError, fs.FsError, OSError, EtcdError, DockerError, DockerUnavailable, MountFailed)

    def __init__(self, config):
        super().__init__(config)
        self.node = node = Node(config, lambda lease: self.records.alive_again(list(self.counts), lease))
        self.docker, self.cluster, self.etcd, self.store = node.docker, node.cluster, node.etcd, node.store
        self.mounter = method(config.MountMethod, config.StateDir)
        self.relays = Relays(config.StateDir)
        self.records = MountRecords(node, self.users)
        self.background = Background(node, self.relays, self.records, self.restore)

    def start(self):
        self.background.start()

    def stop(self):
        self.background.stop()

    def restore(self):
        """After a (re)start: the counts rebuilt from Docker, and this node's
        records in etcd and its relays made to match them."""
        if self.recover():
            self.records.reconcile()
            for name in self.relays.volumes():
                if not self.users(name):
                    self.relays.stop(name)  # of a mount that ended while the plugin was down

    def _initialized(self):
        if not self.background.initialized.is_set():
            raise DriverError(self.background.refused or NOT_INITIALIZED)

    # -- Create and Remove ----------------------------------------------------------------

    def create(self, name, opts):
        self._initialized()
        check_name(name)
        opts = {str(k): str(v) for k, v in (opts or {}).items()}
        info = {"username": USER, "password": secrets.token_urlsafe(18), "opts": opts,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        stored = self.store.create(name, info)
        if stored is not None:
            if stored == opts:
                return
            raise DriverError(f"Volume {name} already exists with different options")
        try:
            self.docker.post("/volumes/create", {"Name": base_volume(name), "Driver": self.config.InternalDriver,
                                                 "DriverOpts": opts})
        except (DockerError, DockerUnavailable) as exc:
            self.store.forget(name)
            raise DriverError(f"Failed to create internal volume {name}. Reason: {exc}. Check the status "
                              f'of the volumes belonging to driver "{self.config.InternalDriver}".') from None
        # Where the base volume is: a node of another vmgroup cannot see it
        # (vfile --check must not take that for its loss).
        vmgroup = self.node.servers.base_status(name).get("vmgroup")
        if not self.store.created(name, dict(info, vmgroup=vmgroup) if vmgroup else info):
            raise DriverError(f"Failed to set status of volume {name} to ready. Reason: it was removed "
                              "while it was being created")

    def remove(self, name):
        self._initialized()
        if not self.ready.is_set():
            raise DriverError(f"Plugin initialization in progress. Cannot remove volume {name}")
        if self.users(name):
            raise DriverError(f"Remove failed: Containers on this host VM are still using volume {name}.")
        deadline = time.monotonic() + self.node.timeout
        while True:
            unlock = self.node.lock(name)
            try:
                snapshot = self.store.snapshot(name)
                if snapshot is None:
                    return  # gone already
                if snapshot.mounts:
                    raise DriverError(f"Remove failed: volume {name} is mounted on node(s) "
                                      f"{', '.join(snapshot.clients())}")
                if snapshot.state != MOUNTED:
                    self._delete_base(name)
                    self.store.delete(name)
                    return
            finally:
                unlock()
            # A file server runs with no user: the managers stop it (they
            # need the lock this loop just let go).
            if time.monotonic() > deadline:
                raise DriverError(f"Remove failed: the file server of volume {name} did not stop")
            self.store.wait_for(name, READY, STOP)

    def _delete_base(self, name):
        """Delete the base volume; the file server's task may still hold it a moment."""
        deadline = time.monotonic() + self.node.timeout
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
        unlock = self.node.lock(name)
        try:
            snapshot = self.store.snapshot(name)
            if snapshot is None:
                raise DriverError("No such volume")
            info = snapshot.info if snapshot.state == MOUNTED else self.store.wait_for(name, MOUNTED, START)
            try:
                port = self.relays.point(name, info["address"], info["port"])
                self.mounter.mount(name, self.target(name), "127.0.0.1", port, info["username"],
                                   info["password"], time.monotonic() + self.node.timeout)
            except (MountFailed, OSError) as exc:
                log.error("Mount of %s failed: %s", name, exc)
                self.relays.stop(name)
                raise DriverError(f"Failed to mount VSSD volume {name} after timeout") from None
            self.records.register(name)
        except BaseException:
            self.records.release_server(name)
            raise
        finally:
            unlock()
        log.info("Mounted name=%s address=%s port=%s etcd_requests=%d", name, info["address"], info["port"],
                 self.etcd.requests() - before)

    def unmount_volume(self, name):
        before = self.etcd.requests()
        self.mounter.unmount(name, self.target(name))
        self.relays.stop(name)
        self.records.unmounted(name)
        log.info("Unmounted name=%s etcd_requests=%d", name, self.etcd.requests() - before)

    def recover_in_use(self, name):
        try:
            os.stat(self.target(name))
        except OSError as exc:
            # Its SMB client ended with the plugin (a managed plugin's helpers
            # end with its container): mounted again for the containers that
            # start from now on.
            log.warning("The mount of %s is gone (%s): mounting it again", name, exc)
            fs.unmount(self.target(name), lazy=True)
            self.mount_volume(name)
            return
        self.records.register(name)

    # -- Get, List, Path ----------------------------------------------------------------------

    def get(self, name):
        self._initialized()
        try:
            snapshot = self.store.snapshot(name)
        except EtcdError as exc:
            if not self.users(name):
                raise
            # Docker asks Get before each Unmount: a node cut off from the
            # managers must still be able to let its containers' mounts go.
            log.warning("Get %s: etcd is out of reach (%s): answered from this node's mounts", name, exc)
            return {"Name": name, "Mountpoint": self.path(name),
                    "Status": {"Volume Status": f"Mounted on this node; etcd is out of reach ({exc})"}}
        if snapshot is None:
            raise DriverError("No such volume")
        details = snapshot.info
        status = {"Volume Status": snapshot.state, "Global Refcount": len(snapshot.mounts),
                  "File server Port": details.get("port") or 0,
                  "Service name": details.get("serviceName") or "",
                  "Clients": snapshot.clients() or None,
                  "Options": details.get("opts") or {}}
        volume = {"Name": name, "Mountpoint": self.path(name), "Status": status}
        if details.get("created"):
            volume["CreatedAt"] = details["created"]  # Docker reads it from Get only, not from List
        return volume

    def list(self):
        self._initialized()
        return [{"Name": name, "Mountpoint": self.path(name)} for name in sorted(self.store.states())]

    def path(self, name):
        return self.mountpoint(name) if self.users(name) else ""
