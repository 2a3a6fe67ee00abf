"""From a decoded request of a known VM to its reply (spec esx-service §2.3-§3):
the protocol version, the config DB mode, the VM's vmgroup, the volume name
and target datastore, then the command under the volume's lock (and, for
attach and detach, the VM's lock)."""

import logging
import os
import threading
import uuid
from contextlib import ExitStack, contextmanager, nullcontext

from .. import __version__, db
from ..db import modes
from ..db.steps import step
from ..errors import NotFound, VmdkopsError
from . import liveness

log = logging.getLogger("vmdkops.executor")

SERVER_VERSION = 2
MISMATCH = (
    "There is a mismatch between VDVS client (Docker plugin) protocol version ({client}) and "
    "server (ESXi) protocol version (2) which indicates different versions of the product are "
    "installed on Guest and ESXi sides, please make sure VDVS plugin and driver are from the "
    "same release version.")
COMMANDS = ("create", "remove", "attach", "detach", "get", "list", "version", "report")
AUDITED = ("create", "remove", "attach", "detach")


class Locks:
    """Named locks, dropped when nobody holds or waits for them."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks = {}  # name -> [lock, users]

    @contextmanager
    def hold(self, *names):
        with ExitStack() as stack:
            for name in sorted(set(n for n in names if n)):  # one order: no deadlock
                stack.enter_context(self._one(name))
            yield

    @contextmanager
    def _one(self, name):
        with self._guard:
            entry = self._locks.setdefault(name, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[name]


class Dispatcher:
    def __init__(self, backend):
        self.backend = backend
        self.locks = Locks()
        self._engines = {}
        self._engines_guard = threading.Lock()
        self._local = threading.local()  # the vmgroup of the request being served
        self.reports = liveness.Reports()

    def engine(self, state):
        """A pooled engine for the current config DB. A SQLite file that was
        replaced (config rm, then init) gets a new engine: pooled connections
        would still read the old, deleted file."""
        key = state.url
        if state.url.startswith("sqlite:"):
            st = os.stat(state.url[len("sqlite:///"):])
            key = (state.url, st.st_dev, st.st_ino)
        with self._engines_guard:
            engine = self._engines.get(key)
            if engine is None:
                for old in [k for k in self._engines if isinstance(k, tuple) and k[0] == state.url]:
                    self._engines.pop(old).dispose()
                engine = self._engines[key] = db.connect(state.url, state.location)
            return engine

    def close(self):
        for engine in self._engines.values():
            engine.dispose()

    def handle(self, message, vm):
        """The reply to one request (never raises for a user error)."""
        cmd = message.get("cmd") if isinstance(message, dict) else None
        who = vm.name if vm else "-"
        self._local.vmgroup = None
        try:
            reply = self._handle(message, vm)
        except VmdkopsError as exc:
            log.info("vm=%s cmd=%s failed: %s", who, cmd, exc)
            reply = {"Error": exc.message}
        except Exception as exc:  # noqa: BLE001 - reply, and keep serving
            error_id = uuid.uuid4().hex[:8]
            log.exception("internal error id=%s vm=%s cmd=%s", error_id, who, cmd)
            reply = {"Error": f"Internal Error({type(exc).__name__}, id={error_id}; see the service log)"}
        if cmd in AUDITED and vm is not None:
            self._audit(message, vm, cmd, reply)
        return reply

    def _audit(self, message, vm, cmd, reply):
        from ..db import audit

        state = modes.detect()
        if state.mode in (modes.Mode.NOT_CONFIGURED, modes.Mode.BROKEN_LINK):
            return
        details = message.get("details") if isinstance(message.get("details"), dict) else {}
        opts = details.get("Opts") if isinstance(details.get("Opts"), dict) else {}
        error = reply.get("Error") if isinstance(reply, dict) else None
        event = {"source": "executor", "actor": f"vm:{vm.name}", "vm": vm.name,
                 "action": "clone" if cmd == "create" and "clone-from" in opts else cmd,
                 "vmgroup": self._local.vmgroup, "target": str(details.get("Name", "")),
                 "outcome": "failed" if error else "ok", "error": error}
        try:
            engine = self.engine(state)
        except Exception as exc:  # noqa: BLE001
            audit.log_loss(event, exc)
            return
        audit.write(engine, **event)

    def _handle(self, message, vm):
        if not isinstance(message, dict):
            raise VmdkopsError("Request is not a JSON object")
        version = message.get("version", str(SERVER_VERSION))
        try:
            mismatch = int(version) != SERVER_VERSION
        except (TypeError, ValueError):
            mismatch = True
        if mismatch:
            raise VmdkopsError(MISMATCH.format(client=version))
        cmd = message.get("cmd")
        if cmd == "version":
            return {"version": __version__}
        if cmd == "report":
            return self._report(vm)
        if cmd not in COMMANDS:
            raise VmdkopsError(f"Unknown command:{cmd}")
        details = message.get("details")
        if not isinstance(details, dict) or not isinstance(details.get("Name", ""), str):
            raise VmdkopsError("Request details must be an object with a string Name")
        name = details.get("Name", "")
        opts = details.get("Opts") or {}
        if not isinstance(opts, dict):
            raise VmdkopsError("Request Opts must be an object")
        return self._execute(vm, cmd, name, opts)

    def _report(self, vm):
        """The VM's plugin is alive: its liveness, for takeovers."""
        if vm is None:
            raise VmdkopsError("A report needs a known VM")

        def engine_of():
            state = modes.detect()
            configured = state.mode not in (modes.Mode.NOT_CONFIGURED, modes.Mode.BROKEN_LINK)
            return self.engine(state) if configured else None

        self.reports.heard(vm, engine_of)
        return None

    def _execute(self, vm, cmd, name, opts):
        from sqlalchemy.orm import Session

        from . import authorize

        state = modes.detect()
        if state.mode is modes.Mode.NOT_CONFIGURED:
            return self._run(vm, cmd, name, opts, None, authorize.simulated_default())
        try:
            if state.mode is modes.Mode.BROKEN_LINK:
                raise modes.broken_link_error(state)
            with Session(self.engine(state)) as session:
                try:
                    with step(session):  # no transaction stays open while disks are being made
                        tenant = authorize.tenant_of(session, vm)
                except authorize.NotAuthorized:
                    if cmd == "detach":
                        return self._force_detach(vm, name, session)
                    raise
                return self._run(vm, cmd, name, opts, session, tenant)
        except VmdkopsError as exc:
            if cmd == "list":  # never fails: Docker would show stale names (#990)
                log.info("list for vm=%s answered [] after: %s", vm.name, exc)
                return []
            raise

    def _run(self, vm, cmd, name, opts, session, tenant):
        from .. import names
        from . import volumes

        self._local.vmgroup = tenant.name
        if cmd == "list":
            return [{"Name": full, "Attributes": {}}
                    for full in volumes.list_names(self.backend, session, tenant)]
        parsed = names.parse(name)
        datastore = self._target(vm, tenant, parsed)
        request = volumes.Request(self.backend, session, vm, tenant, datastore, parsed,
                                  short_name=parsed.datastore is None, reports=self.reports)
        lock_names = [volumes.lock_name(datastore.name, tenant.uuid, parsed.volume)]
        if cmd == "create":
            options = request.check_create(opts)
            lock_names.append(request.clone_source_lock(options))
        if cmd in ("attach", "detach"):
            lock_names.append(f"vm:{vm.uuid}")
        with self.locks.hold(*lock_names):
            if cmd == "create":
                return request.create(options)
            return getattr(request, cmd)()

    def _target(self, vm, tenant, parsed):
        from ..names import match_datastore
        from .authorize import VM_DS_URL

        datastores = self.backend.datastores()
        if parsed.datastore is None:
            url = tenant.default_datastore_url
            if url == VM_DS_URL:
                found = self.backend.datastore_by_name(vm.datastore)
            else:
                found = self.backend.datastore_by_url(url)
            if found is None:
                raise NotFound(f"Default datastore of vmgroup {tenant.name} does not exist")
            return found
        known = match_datastore(parsed.datastore, [ds.name for ds in datastores])
        if known is None:
            from ..backends import datastore_names

            default = datastore_names(self.backend)(tenant.default_datastore_url)
            raise NotFound(f"Invalid datastore '{parsed.datastore}'.\nKnown datastores: "
                           f"{', '.join(ds.name for ds in datastores)}.\nDefault datastore: {default}")
        return self.backend.datastore_by_name(known)

    def _force_detach(self, vm, name, session):
        """Detach for a VM that lost its vmgroup (#1441): no privilege check,
        the disk found among the VM's own attachments."""
        from .. import names

        parsed = names.parse(name)
        if parsed.datastore is None:
            raise VmdkopsError("Detaching without a vmgroup needs the full name volume@datastore")
        datastore = self.backend.datastore_by_name(parsed.datastore)
        if datastore is None:
            raise NotFound(f"Invalid datastore '{parsed.datastore}'.")
        for descriptor in self.backend.attached_disks(vm):
            found, _, volume = self.backend.volume_of(descriptor)
            if (found, volume) == (datastore, parsed.volume):
                self._detach(vm, descriptor, session)
        return None

    def _detach(self, vm, descriptor, session):
        """Take a disk off a VM, under the locks a detach request takes."""
        from .detach import detach_disk
        from .volumes import lock_name

        datastore, group_uuid, volume = self.backend.volume_of(descriptor)
        with self.locks.hold(lock_name(datastore.name, group_uuid, volume), f"vm:{vm.uuid}"):
            detach_disk(self.backend, session, vm, descriptor, datastore.url, volume)

    def vms_powered_off(self, vms):
        """VMs powered off: their volumes are detached, so that another VM can
        use them (spec esx-service §14.4); one query finds the disks of all of
        them. Errors are logged; the watch goes on."""
        from sqlalchemy.orm import Session

        by_uuid = {vm.uuid: vm for vm in vms}
        disks = [(by_uuid[vm_uuid], descriptor) for vm_uuid, descriptor, _ in self.backend.attachments()
                 if vm_uuid in by_uuid]
        if not disks:
            return
        state = modes.detect()
        configured = state.mode not in (modes.Mode.NOT_CONFIGURED, modes.Mode.BROKEN_LINK)
        with Session(self.engine(state)) if configured else nullcontext() as session:
            for vm, descriptor in disks:
                try:
                    self._detach(vm, descriptor, session)
                    log.info("VM %s powered off: detached %s", vm.name, descriptor)
                except Exception as exc:  # noqa: BLE001
                    log.warning("Could not detach %s for %s: %s", descriptor, vm.name, exc)
