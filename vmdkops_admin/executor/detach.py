"""Taking a disk off a VM with its records: the device, then its side-car,
then the index, each a crash point. A VM's detach, a takeover, a VM
powered off and the administrator's forced detach all take a disk off this
way; reconcile brings side-cars back in step with ``mark_detached``."""

from sqlalchemy import update

from ..db.models import Volume
from ..db.steps import step
from ..faults import crashpoint


def detach_disk(backend, session, vm, descriptor, datastore_url, volume):
    """Take a disk off a VM: the device, its side-car (a guarded write) and,
    with a config DB, the index."""
    backend.detach(vm, descriptor)
    crashpoint("detach:device")
    mark_detached(backend, descriptor, vm)
    crashpoint("detach:metadata")
    with step(session, "detach:indexed"):
        if session is not None:
            session.execute(update(Volume).where(
                Volume.datastore_url == datastore_url, Volume.name == volume,
                Volume.attached_vm_uuid == vm.uuid).values(attached_vm_uuid=None))


def mark_detached(backend, descriptor, vm):
    """Side-car to detached, unless it names another VM (a guarded write)."""
    meta = backend.read_metadata(descriptor)
    if meta is None or meta.get("attachedVMUuid") not in (None, vm.uuid):
        return
    meta["status"] = "detached"
    for key in ("attachedVMUuid", "attachedVMName", "attachedVMDevice"):
        meta.pop(key, None)
    backend.write_metadata(descriptor, meta, guard=("attachedVMUuid", vm.uuid))
