"""Volume operations for one VM: create (and clone), remove, attach, detach,
get and list (spec esx-service §6-§8).

The order of work keeps the index, the side-cars and the disks in step: a
create commits its quota reservation and its index row ("creating") before
the disk is made and marks the row "ready" after; a remove marks the row
"removing" before the disk goes and deletes the row after. A crash between
leaves a row that ``volume reconcile`` finishes or undoes."""

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import delete, select, update

from ..backends import AttachedElsewhere, Datastore, VirtualMachine
from ..db.models import Volume
from ..db.steps import step
from ..errors import OPT_VOLUME_SIZE_INVALID, InvalidArgument, NotFound, VmdkopsError
from ..faults import crashpoint
from ..names import VolumeName, validate_new_volume
from ..sizes import human_size
from . import authorize
from .detach import detach_disk
from .options import check_options, comparable
from .takeover import take_over


def created_now():
    return time.asctime(time.gmtime())


@dataclass
class Request:
    """One operation of one VM on one volume, after its name has been
    resolved and its vmgroup looked up."""
    backend: object
    session: Optional[object]        # None without a config DB
    vm: VirtualMachine
    tenant: authorize.Tenant
    datastore: Datastore
    name: VolumeName
    short_name: bool
    reports: Optional[object] = None  # the executor's liveness.Reports (takeovers)

    @property
    def volume(self):
        return self.name.volume

    @property
    def full_name(self):
        return f"{self.volume}@{self.datastore.name}"

    @property
    def descriptor(self):
        return self.backend.descriptor(self.datastore, self.tenant.uuid, self.volume)

    def rule(self, datastore=None):
        vm_ds = self.backend.datastore_by_name(self.vm.datastore)
        target = datastore or self.datastore
        return authorize.rule_for(self.tenant, target.url, vm_ds.url if vm_ds else None,
                                  self.short_name and datastore is None)

    # -- the index ------------------------------------------------------------------

    def _index_row(self):
        return self.session.scalars(select(Volume).where(
            Volume.vmgroup_id == self.tenant.id, Volume.datastore_url == self.datastore.url,
            Volume.name == self.volume)).first()

    def _reserve(self, mb, options, policy_id=None):
        """Check the quota and insert the "creating" row in one step."""
        from ..db import write_lock

        with step(self.session, "create:reserved") as session:
            if session is None:
                authorize.check_create(self.rule(), mb, 0)
                return
            write_lock(session, f"{self.tenant.id}|{self.datastore.url}")
            stale = self._index_row()
            if stale is not None:
                # Our own earlier attempt that left no disk (we hold the volume lock).
                session.delete(stale)
                session.flush()
            used = authorize.used_mb(session, self.tenant, self.datastore.url)
            authorize.check_create(self.rule(), mb, used)
            session.add(Volume(vmgroup_id=self.tenant.id, datastore_url=self.datastore.url,
                               name=self.volume, size_mb=mb, options=options, state="creating",
                               policy_id=policy_id,
                               created=datetime.now(timezone.utc).replace(tzinfo=None),
                               created_by=self.vm.name))

    def _set_state(self, name, **values):
        with step(self.session, name) as session:
            if session is not None:
                session.execute(update(Volume).where(
                    Volume.vmgroup_id == self.tenant.id, Volume.datastore_url == self.datastore.url,
                    Volume.name == self.volume).values(**values))

    def _drop_row(self, name):
        with step(self.session, name) as session:
            if session is not None:
                session.execute(delete(Volume).where(
                    Volume.vmgroup_id == self.tenant.id, Volume.datastore_url == self.datastore.url,
                    Volume.name == self.volume))

    # -- create and clone ---------------------------------------------------------------

    def check_create(self, opts):
        """The ``CreateOptions`` of a create of this volume (its name checked first)."""
        validate_new_volume(self.volume)
        return check_options(opts, self.backend.supports_policies(self.datastore))

    def create(self, options):
        """Make the volume of ``check_create``'s options."""
        if self.backend.disk_exists(self.descriptor):
            stored = (self.backend.read_metadata(self.descriptor) or {}).get("volOpts", {})
            if comparable(stored) == options.comparable():
                return None
            raise VmdkopsError(f"Volume {self.full_name} already exists with different options")
        if options.clone_from is not None:
            return self._clone(options)
        policy = self._policy(options.policy)
        mb = options.size_mb
        if mb <= 0:
            raise InvalidArgument(OPT_VOLUME_SIZE_INVALID)
        self._make(mb, options.given, lambda: self.backend.create_disk(self.descriptor, mb, options.diskformat,
                                                                       policy=policy[1] if policy else None),
                   {"status": "detached", "volOpts": options.given, "created": created_now(),
                    "created-by": self.vm.name}, policy)

    def _policy(self, name):
        """(id or None, name, content) of the policy a create names, or None: one
        of the auth DB, else one the storage layer holds itself (vCenter's)."""
        if name is None:
            return None
        from sqlalchemy import select as select_

        from ..db.models import Policy

        policies = []
        with step(self.session) as session:  # no transaction stays open while vSphere is asked
            if session is not None:
                policies = [(p.id, p.name, p.content)
                            for p in session.scalars(select_(Policy).order_by(Policy.name))]
        found = next((p for p in policies if p[1] == name), None)
        if found is not None:
            return found
        rules = self.backend.find_external_policy(name)
        if rules is not None:
            return None, name, rules
        message = f"Policy {name} does not exist."
        if policies:
            message += f" Available policies are: {[p[1] for p in policies]}"
        raise NotFound(message)

    def _make(self, mb, opts, make_disk, meta, policy=None):
        self._reserve(mb, opts, policy[0] if policy else None)
        made = False
        try:
            self.backend.vmgroup_dir(self.datastore, self.tenant.uuid, self.tenant.name, create=True)
            make_disk()
            made = True
            crashpoint("create:disk")
            self.backend.write_metadata(self.descriptor, meta)
            if policy is not None:
                self.backend.apply_policy(self.descriptor, policy[1], policy[2])
            crashpoint("create:metadata")
        except BaseException as exc:
            if made:
                self.backend.delete_disk(self.descriptor)
            self._drop_row("create:undone")
            if isinstance(exc, FileExistsError):
                raise VmdkopsError(f"Volume {self.full_name} is being created by another request") from None
            if isinstance(exc, OSError):
                raise VmdkopsError(f"Failed to create volume: {exc.strerror or exc}") from None
            raise
        self._set_state("create:ready", state="ready")

    def _clone(self, options):
        opts, source_name = options.given, options.clone_from
        source_ds = self.datastore
        if source_name.datastore:
            source_ds = self.backend.datastore_by_name(source_name.datastore)
            if source_ds is None:
                known = ", ".join(ds.name for ds in self.backend.datastores())
                raise NotFound(f"Invalid datastore '{source_name.datastore}'.\nKnown datastores: "
                               f"{known}.\nDefault datastore_url: {self.datastore.url}")
        try:
            authorize.check(self.rule(source_ds), "attach")
        except VmdkopsError as exc:
            raise VmdkopsError(f"Failed to authorize VM: {exc}, datastore: {source_ds.name}") from None
        source = self.backend.descriptor(source_ds, self.tenant.uuid, source_name.volume)
        if not self.backend.disk_exists(source):
            raise NotFound(f"Could not find volume for cloning {opts['clone-from']}")
        capacity, _ = self.backend.disk_info(source)
        mb = -(-capacity // (1024 * 1024))
        meta = dict(self.backend.read_metadata(source) or {})
        for key in ("attachedVMUuid", "attachedVMName", "attachedVMDevice"):
            meta.pop(key, None)
        vol_opts = dict(meta.get("volOpts") or {})
        vol_opts.update({key: opts[key] for key in ("access", "attach-as") if key in opts})
        vol_opts.update({"clone-from": source_name.volume, "diskformat": opts["diskformat"],
                         "size": f"{mb}mb"})
        meta.update({"status": "detached", "created": created_now(), "created-by": self.vm.name,
                     "volOpts": vol_opts})
        policy = self._policy(options.policy)
        if policy is not None:
            vol_opts["vsan-policy-name"] = policy[1]
        self._make(mb, vol_opts,
                   lambda: self.backend.clone_disk(source, self.descriptor, options.diskformat), meta,
                   policy)

    def clone_source_lock(self, options):
        """The lock name of a clone's source, so both can be taken in order."""
        source = options.clone_from
        if source is None:
            return None
        return lock_name(source.datastore or self.datastore.name, self.tenant.uuid, source.volume)

    # -- remove ---------------------------------------------------------------------------

    def remove(self):
        authorize.check(self.rule(), "remove")
        if not self.backend.disk_exists(self.descriptor):
            self._drop_row("remove:unindexed")
            return None
        meta = self.backend.read_metadata(self.descriptor) or {}
        holder = self.backend.attached_to(self.descriptor)
        if meta.get("status") == "attached" or holder:
            name = meta.get("attachedVMName") or (self._vm_name(holder[0]) if holder else None)
            raise VmdkopsError(f"Failed to remove volume {self.volume}, in use by VM = {name}.")
        self.backend.check_disk(self.descriptor)
        self._set_state("remove:marked", state="removing")
        self.backend.delete_disk(self.descriptor)
        crashpoint("remove:deleted")
        self._drop_row("remove:unindexed")
        return None

    # -- attach and detach ------------------------------------------------------------------

    def attach(self):
        authorize.check(self.rule(), "attach")
        if not self.backend.disk_exists(self.descriptor):
            raise NotFound(f"Volume {self.volume} not found (file: {self.descriptor})")
        with step(self.session) as session:
            if session is not None and getattr(self._index_row(), "state", None) == "resizing":
                raise VmdkopsError(f"Failed to attach volume {self.full_name}: it is being resized")
        meta = self.backend.read_metadata(self.descriptor) or {}
        try:
            device = self.backend.attach(self.vm, self.descriptor)
        except AttachedElsewhere as exc:
            # A VM the inventory no longer has: the name the side-car last gave it.
            known = meta.get("attachedVMName") if meta.get("attachedVMUuid") == exc.vm_uuid else None
            take_over(self, exc.vm_uuid, exc.vm_name or known or exc.vm_uuid)
            meta = self.backend.read_metadata(self.descriptor) or {}
            device = self.backend.attach(self.vm, self.descriptor)
        crashpoint("attach:device")
        meta.update({"status": "attached", "attachedVMUuid": self.vm.uuid,
                     "attachedVMName": self.vm.name, "attachedVMDevice": device})
        self.backend.write_metadata(self.descriptor, meta)
        crashpoint("attach:metadata")
        self._set_state("attach:indexed", attached_vm_uuid=self.vm.uuid)
        return device

    def detach(self):
        authorize.check(self.rule(), "detach")
        if not self.backend.disk_exists(self.descriptor):
            return None
        detach_disk(self.backend, self.session, self.vm, self.descriptor, self.datastore.url, self.volume)
        return None

    # -- get ----------------------------------------------------------------------------------

    def get(self):
        authorize.check(self.rule(), "get")
        if not self.backend.disk_exists(self.descriptor):
            raise NotFound(f"Volume {self.volume} not found (file: {self.descriptor})")
        meta = self.backend.read_metadata(self.descriptor) or {}
        capacity, allocated = self.backend.disk_info(self.descriptor)
        reply = {"created by VM": meta.get("created-by", "N/A"), "created": meta.get("created", "N/A"),
                 "status": meta.get("status", "detached"),
                 "capacity": {"size": human_size(capacity), "allocated": human_size(allocated)},
                 "datastore": self.datastore.name, "vmgroup": self.tenant.name}
        if meta.get("attachedVMUuid"):
            vm = self.backend.find_vm(meta["attachedVMUuid"])
            reply["attached to VM"] = vm.name if vm else (meta.get("attachedVMName")
                                                          or meta["attachedVMUuid"])
            # The asking VM's plugin learns so that a volume taken from it is not its own any more.
            reply["attached to this VM"] = meta["attachedVMUuid"].lower() == self.vm.uuid.lower()
        if "attachedVMDevice" in meta:
            reply["attachedVMDevice"] = meta["attachedVMDevice"]
        vol_opts = meta.get("volOpts")
        if vol_opts is not None:
            for key in ("fstype", "vsan-policy-name"):
                if key in vol_opts:
                    reply[key] = vol_opts[key]
            for key, default in (("diskformat", "thin"), ("attach-as", "independent_persistent"),
                                 ("access", "read-write"), ("clone-from", "None")):
                reply[key] = vol_opts.get(key, default)
        return reply

    def _vm_name(self, vm_uuid):
        """The inventory's name of a VM, else its uuid."""
        vm = self.backend.find_vm(vm_uuid)
        return vm_uuid if vm is None else vm.name


def lock_name(datastore_name, vmgroup_uuid, volume):
    return f"{datastore_name}.{vmgroup_uuid}.{volume}"


def list_names(backend, session, tenant):
    """Full names of a vmgroup's volumes on every datastore."""
    datastores = backend.datastores()
    if session is not None:
        rows = session.execute(select(Volume.datastore_url, Volume.name).where(
            Volume.vmgroup_id == tenant.id, Volume.state.in_(("ready", "resizing")))).all()
        order = {ds.url: i for i, ds in enumerate(datastores)}
        names = {ds.url: ds.name for ds in datastores}
        rows = sorted((r for r in rows if r.datastore_url in names),
                      key=lambda r: (order[r.datastore_url], r.name))
        return [f"{r.name}@{names[r.datastore_url]}" for r in rows]
    return [f"{volume}@{ds.name}" for ds in datastores
            for vmgroup_uuid, volume, _ in backend.volume_files(ds) if vmgroup_uuid == tenant.uuid]
