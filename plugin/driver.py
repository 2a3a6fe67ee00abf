"""The vsphere volume driver (spec plugin §3.4-§3.7): Docker's volume
operations on top of the executor, with mkfs at create, attach and mount on
the first Mount, unmount and detach on the last Unmount, and reference counts
per mount ID that are rebuilt after a restart from Docker and /proc/mounts.

Until that rebuild (recovery) has finished, Remove is refused and Mount and
Unmount wait, so a count is never lost or counted twice."""

import logging
import os
import threading
import time

from . import docker_api, fs
from .client import ExecutorError
from .devices import DeviceNotFound, wait_for

log = logging.getLogger("vmdkops.plugin")
RECOVERY_WAIT = 120.0


class DriverError(Exception):
    """An error for Docker's ``Err``."""


class Driver:
    def __init__(self, config, client, devices):
        self.config = config
        self.client = client
        self.devices = devices
        self.root = config.MountRoot.rstrip("/")
        self.counts = {}      # full name -> number of mounts
        self.mount_ids = {}   # Docker mount ID -> full name
        self.state = threading.Lock()
        self.ready = threading.Event()

    def mountpoint(self, name):
        return f"{self.root}/{name}/"

    def _target(self, name):
        return f"{self.root}/{name}"

    # -- names --------------------------------------------------------------------

    def _get(self, name):
        if not name:
            raise DriverError(" No volume with name as empty string exists")
        meta = self.client.run("get", name)
        if not isinstance(meta, dict):
            raise DriverError(f"Volume {name} has no metadata")
        return meta

    def full_name(self, name, meta=None):
        """``vol@ds`` for a name as Docker gave it, and the volume's metadata if fetched."""
        if "@" in name:
            return name, meta
        meta = meta or self._get(name)
        datastore = meta.get("datastore")
        if not isinstance(datastore, str) or not datastore:
            raise DriverError(f"Volume {name} has no datastore in its metadata")
        return f"{name}@{datastore}", meta

    # -- Create and Remove ------------------------------------------------------------

    def create(self, name, opts):
        opts = dict(opts or {})
        if "fstype" not in opts and "clone-from" not in opts:
            opts["fstype"] = "ext4"
        if "fstype" in opts:
            fs.check(opts["fstype"])
        try:
            self.client.run("create", name, opts, timeout=900)
        except ExecutorError as exc:
            if "already exists" in str(exc) and "different options" not in str(exc):
                return
            raise
        if "clone-from" in opts:
            return
        log.info("Attaching volume and creating filesystem name=%s fstype=%s", name, opts["fstype"])
        try:
            reply = self.client.run("attach", name, timeout=300)
            device = self.devices.path(reply)
            if not wait_for(device):
                log.warning("Exceeded timeout while waiting for device attach to complete")
            fs.mkfs(opts["fstype"], device, name.rpartition("@")[0] or name)
        except (ExecutorError, DeviceNotFound, fs.FsError) as exc:
            self._forget(name)
            raise DriverError(str(exc)) from None
        self.client.run("detach", name)
        log.info("Volume and filesystem created name=%s", name)

    def _forget(self, name):
        """Undo a create whose filesystem could not be made."""
        for cmd in ("detach", "remove"):
            try:
                self.client.run(cmd, name)
            except ExecutorError as exc:
                log.warning("cleanup %s of %s failed: %s", cmd, name, exc)

    def remove(self, name):
        if not self.ready.is_set():
            raise DriverError(f"Plugin initialization in progress. Cannot remove volume={name}")
        try:
            full, _ = self.full_name(name)
        except (DriverError, ExecutorError):
            full = name  # not there: the executor's remove says what it is
        count = self.counts.get(full, 0)
        if count:
            raise DriverError(f"Remove failure - volume is still mounted.  volume={name}, refcount={count}")
        self.client.run("remove", name)

    # -- Mount and Unmount --------------------------------------------------------------

    def _wait_ready(self):
        if not self.ready.wait(RECOVERY_WAIT):
            raise DriverError("Plugin initialization in progress. Try again later.")

    def mount(self, name, mount_id):
        self._wait_ready()
        with self.state:
            log.info("Mounting volume name=%s", name)
            full, meta = self.full_name(name)
            count = self.counts.get(full, 0) + 1
            self.counts[full] = count
            self.mount_ids[mount_id] = full
            if count > 1 or full in fs.mounted(self.root):
                log.info("Already mounted, skipping mount. name=%s refcount=%d", full, count)
                return self.mountpoint(full)
            try:
                self._attach_and_mount(full, meta)
            except (ExecutorError, DriverError, DeviceNotFound, fs.FsError) as exc:
                self._release(full, mount_id)
                raise DriverError(str(exc)) from None
            return self.mountpoint(full)

    def _attach_and_mount(self, full, meta=None):
        meta = meta or self._get(full)
        read_only = meta.get("access") == "read-only"
        fstype = meta.get("fstype") or "ext4"
        reply = self.client.run("attach", full, timeout=300)
        device = self.devices.path(reply)
        if not wait_for(device):
            log.warning("Exceeded timeout while waiting for device attach to complete")
        try:
            fs.mount(device, self._target(full), fstype, read_only)
        except fs.FsError:
            self._detach(full)
            raise

    def _release(self, full, mount_id):
        self.mount_ids.pop(mount_id, None)
        count = self.counts.get(full, 1) - 1
        if count > 0:
            self.counts[full] = count
        else:
            self.counts.pop(full, None)
            self._detach(full)

    def _detach(self, full):
        log.info("Detaching %s - it is not used anymore", full)
        try:
            self.client.run("detach", full)
        except ExecutorError as exc:
            log.warning("detach of %s failed: %s", full, exc)

    def unmount(self, name, mount_id):
        self._wait_ready()
        with self.state:
            log.info("Unmounting Volume name=%s", name)
            full = self.mount_ids.pop(mount_id, None) or self.full_name(name)[0]
            count = self.counts.get(full, 0) - 1
            if count >= 1:
                self.counts[full] = count
                log.info("Still in use, skipping unmount request. name=%s refcount=%d", full, count)
                return
            self.counts.pop(full, None)
            try:
                fs.unmount(self._target(full))
            except fs.FsError as exc:
                log.warning("Failed to unmount volume. Now trying to detach... %s", exc)
            self.client.run("detach", full)

    # -- Path, Get, List ------------------------------------------------------------------

    def path(self, name):
        """Where the volume is mounted, '' while it is not (no executor call)."""
        full = name if name in self.counts else next(
            (f for f in self.counts if f.rpartition("@")[0] == name), None)
        return self.mountpoint(full) if full else ""

    def get(self, name):
        meta = self._get(name)
        full, _ = self.full_name(name, meta)
        mounted = full in self.counts
        return {"Name": name, "Mountpoint": self.mountpoint(full) if mounted else "", "Status": meta}

    def list(self):
        entries = self.client.run("list") or []
        return [{"Name": e["Name"], "Mountpoint": self.mountpoint(e["Name"]) if e["Name"] in self.counts
                 else ""} for e in entries if isinstance(e, dict) and isinstance(e.get("Name"), str)]

    # -- recovery -----------------------------------------------------------------------

    def recover(self, attempts=20, delay=2.0, sleep=time.sleep):
        """Rebuild the counts from Docker and /proc/mounts, then unmount and
        detach what no container uses and mount what one uses but is not
        mounted. Retried with a growing delay while Docker does not answer."""
        for attempt in range(attempts):
            try:
                self._recover_once()
                self.ready.set()
                log.info("Refcounting successfully completed")
                return True
            except (docker_api.DockerUnavailable, ExecutorError, DriverError, OSError, ValueError) as exc:
                log.warning("Refcounting failed: (%s). Attempts left: %d", exc, attempts - attempt - 1)
                sleep(delay)
                delay = min(delay * 2, 60)
        log.error("Failed to talk to docker to calculate volumes usage. Please restart docker")
        return False

    def _recover_once(self):
        names = docker_api.volume_mounts(self.config.DockerSocket, self.config.Driver, self.root)
        counts = {}
        for name in names:
            full, _ = self.full_name(name)
            counts[full] = counts.get(full, 0) + 1
        with self.state:
            mounted = fs.mounted(self.root)
            leftovers = set(os.listdir(self.root)) if os.path.isdir(self.root) else set()
            log.info("Discovered %d volumes that may be in use.", len(counts))
            for full in sorted(set(counts) | set(mounted) | leftovers):
                count, device = counts.get(full, 0), mounted.get(full)
                log.info("Volume name=%s count=%d mounted=%s device='%s'", full, count,
                         "true" if device else "false", device or "")
                try:
                    if device and not count:
                        log.info("Initiating recovery unmount. name=%s", full)
                        fs.unmount(self._target(full))
                        self._detach(full)
                    elif not device and count:
                        log.info("Initiating recovery mount. name=%s", full)
                        self._attach_and_mount(full)
                    elif not device and not count:
                        self._detach(full)
                        os.rmdir(self._target(full))
                except (ExecutorError, DriverError, DeviceNotFound, fs.FsError, OSError) as exc:
                    log.error("Recovery of %s failed - manual recovery may be needed: %s", full, exc)
            self.counts = counts
