"""What every driver of these plugins shares (spec plugin §3.6-§3.7): mount
counts per volume and per Docker mount ID, where the first Mount of a volume
mounts it on this host and the last Unmount unmounts it, and the rebuild of
those counts after a restart from Docker's live containers and
/proc/mounts (recovery).

Until recovery has finished, Remove is refused and Mount and Unmount wait,
so a count is never lost or counted twice. A volume's Mount and Unmount run
one at a time under the volume's own lock, and the counts under a short
guard of their own: a volume whose mount takes long (a shared volume's file
server starting) delays no other volume. A volume another VM took over
while it was mounted here (the driver says which) is dropped when a Mount
or the recovery meets it: its dead mount goes and nothing counts it, and
the Mount then asks for it as for a volume not mounted here. A driver says
how a volume is named, mounted and unmounted; this class does the counting."""

import contextlib
import logging
import os
import threading
import time

from . import docker_api, fs

log = logging.getLogger("vmdkops.plugin")
RECOVERY_WAIT = 120.0
READY = "Refcounting successfully completed"  # logged once the counts are rebuilt: the plugin serves


class DriverError(Exception):
    """An error for Docker's ``Err``."""


class RefcountedDriver:
    # Errors of a driver's own parts that reach Docker as text.
    ERRORS = (DriverError, fs.FsError, OSError)

    def __init__(self, config):
        self.config = config
        self.root = config.MountRoot.rstrip("/")
        self.counts = {}      # volume key -> number of mounts
        self.mount_ids = {}   # Docker mount ID -> volume key
        self.state = threading.Lock()  # the two above; held only while they change
        self._volume_locks = {}  # volume key -> [lock, holders and waiters]
        self.ready = threading.Event()

    def mountpoint(self, key):
        return f"{self.root}/{key}/"

    def target(self, key):
        return f"{self.root}/{key}"

    # -- the process: what runs once the socket is bound, and at exit ------------------

    def start(self):
        """Runs in the background once the plugin's socket is bound: the
        recovery of the counts, and whatever else the driver needs first."""
        self.recover()

    def stop(self):
        """Runs when the plugin stops serving Docker."""

    # -- what a driver says ---------------------------------------------------------

    def resolve(self, name):
        """(key, context) of a name as Docker gives it: the key counts are kept
        under, and whatever ``mount_volume`` wants to know (or None)."""
        return name, None

    def unknown_mount(self, name, mount_id):
        """The key of an Unmount whose mount ID this plugin never saw."""
        return self.resolve(name)[0]

    def mount_volume(self, key, context):
        raise NotImplementedError

    def mount_failed(self, key):
        """Undo what a failed first mount may have left (nothing by default)."""

    def unmount_volume(self, key):
        raise NotImplementedError

    def mounted_volumes(self):
        """Key -> source of the volumes mounted on this host now."""
        return fs.mounted(self.root)

    def recover_unmount(self, key):
        """Mounted, and no container uses it."""
        self.unmount_volume(key)

    def recover_mount(self, key):
        """Used by a container, and not mounted."""
        self.mount_volume(key, None)

    def recover_in_use(self, key):
        """Mounted and used: nothing to do by default."""

    def recover_leftover(self, key):
        """Neither used nor mounted, but its mount point is there."""
        os.rmdir(self.target(key))

    def taken(self, key):
        """Whether another VM took the volume over while it was mounted here
        (its mount here is dead): never, by default."""
        return False

    def drop(self, key):
        """Forget a volume taken from this host: its dead mount goes (lazily:
        containers may still hold it), and nothing counts it any more."""
        log.warning("Volume %s was taken over by another VM while it was mounted here: its mount is dropped "
                    "and not counted; containers here that still use it see a dead disk", key)
        with self.state:
            self.counts.pop(key, None)
            for mount_id in [m for m, k in self.mount_ids.items() if k == key]:
                del self.mount_ids[mount_id]
        with contextlib.suppress(fs.FsError, OSError):
            fs.unmount(self.target(key), lazy=True)

    # -- Mount and Unmount ------------------------------------------------------------

    def wait_ready(self):
        if not self.ready.wait(RECOVERY_WAIT):
            raise DriverError("Plugin initialization in progress. Try again later.")

    @contextlib.contextmanager
    def _volume(self, key):
        """The volume's own lock (dropped when nobody holds or waits for it)."""
        with self.state:
            entry = self._volume_locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self.state:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._volume_locks[key]

    def mount(self, name, mount_id):
        self.wait_ready()
        log.info("Mounting volume name=%s", name)
        key, context = self.resolve(name)
        with self._volume(key):
            with self.state:
                count = self.counts.get(key, 0) + 1
                self.counts[key] = count
                self.mount_ids[mount_id] = key
            if count > 1 or key in self.mounted_volumes():
                if not self.taken(key):
                    log.info("Already mounted, skipping mount. name=%s refcount=%d", key, count)
                    return self.mountpoint(key)
                self.drop(key)
                with self.state:
                    self.counts[key] = 1
                    self.mount_ids[mount_id] = key
            try:
                self.mount_volume(key, context)
            except self.ERRORS as exc:
                with self.state:
                    self.mount_ids.pop(mount_id, None)
                    self.counts.pop(key, None)
                self.mount_failed(key)
                raise DriverError(str(exc)) from None
            return self.mountpoint(key)

    def unmount(self, name, mount_id):
        self.wait_ready()
        log.info("Unmounting Volume name=%s", name)
        with self.state:
            key = self.mount_ids.get(mount_id)
        key = key or self.unknown_mount(name, mount_id)
        with self._volume(key):
            with self.state:
                self.mount_ids.pop(mount_id, None)
                count = self.counts.get(key, 0) - 1
                if count >= 1:
                    self.counts[key] = count
                    log.info("Still in use, skipping unmount request. name=%s refcount=%d", key, count)
                    return
                self.counts.pop(key, None)
            self.unmount_volume(key)

    def users(self, key):
        return self.counts.get(key, 0)

    # -- recovery -----------------------------------------------------------------------

    def recover(self, attempts=20, delay=2.0, sleep=time.sleep):
        """Rebuild the counts from Docker and /proc/mounts, then unmount what
        no container uses and mount what one uses but is not mounted. Retried
        with a growing delay while Docker (or what the driver needs) does not
        answer."""
        for attempt in range(attempts):
            try:
                self._recover_once()
                self.ready.set()
                log.info(READY)
                return True
            except (docker_api.DockerUnavailable, DriverError, OSError, ValueError) + self.ERRORS as exc:
                log.warning("Refcounting failed: (%s). Attempts left: %d", exc, attempts - attempt - 1)
                sleep(delay)
                delay = min(delay * 2, 60)
        log.error("Failed to talk to docker to calculate volumes usage. Please restart docker")
        return False

    def _recover_once(self):
        names = docker_api.volume_mounts(self.config.DockerSocket, self.config.Driver, self.root)
        counts = {}
        for name in names:
            key, _ = self.resolve(name)
            counts[key] = counts.get(key, 0) + 1
        with self.state:
            mounted = self.mounted_volumes()
            leftovers = {entry.name for entry in os.scandir(self.root) if entry.is_dir()} \
                if os.path.isdir(self.root) else set()
            log.info("Discovered %d volumes that may be in use.", len(counts))
            for key in sorted(set(counts) | set(mounted) | leftovers):
                count, source = counts.get(key, 0), mounted.get(key)
                log.info("Volume name=%s count=%d mounted=%s device='%s'", key, count,
                         "true" if source else "false", source or "")
                try:
                    if source and not count:
                        log.info("Initiating recovery unmount. name=%s", key)
                        self.recover_unmount(key)
                    elif not source and count:
                        log.info("Initiating recovery mount. name=%s", key)
                        self.recover_mount(key)
                    elif not source and not count:
                        self.recover_leftover(key)
                    elif self.taken(key):
                        self.drop(key)
                        counts.pop(key)
                    else:
                        self.recover_in_use(key)
                except self.ERRORS as exc:
                    log.error("Recovery of %s failed - manual recovery may be needed: %s", key, exc)
                    if not source:  # not mounted: nothing here to count
                        counts.pop(key, None)
            self.counts = counts
