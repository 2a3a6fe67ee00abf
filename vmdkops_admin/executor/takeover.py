"""Taking a volume over from a VM whose plugin went silent: the VM asking
gets it when the holder has not reported for longer than the vmgroup's
``takeover-after`` and the backend can cut the holder off first (its
``fenced``), so that there are never two writers. Otherwise the attach is
refused with what an administrator can do, and nothing changes."""

import logging

from ..backends import NotFenced, VirtualMachine
from ..db import audit
from ..errors import VmdkopsError
from . import liveness
from .detach import detach_disk

log = logging.getLogger("vmdkops.executor")


def take_over(request, holder_uuid, holder_name):
    """Detach the disk of ``request`` from its silent holder, or raise the
    refusal. The caller holds the volume's lock."""
    refused = f"Failed to attach volume {request.full_name}: it is attached to VM {holder_name}"
    after = request.tenant.takeover_after
    if after is None:
        raise VmdkopsError(refused)
    reported = (request.reports.last(request.session, holder_uuid) if request.reports is not None
                else None)
    if reported is None:
        raise VmdkopsError(f"{refused}, whose plugin has never reported (only a VM whose plugin went "
                           f"silent is taken over). {_remedy(request, holder_name)}")
    silent = int((liveness.utcnow() - reported).total_seconds())
    if silent < after:
        raise VmdkopsError(f"{refused}, whose plugin reported {silent} s ago (it is taken over after "
                           f"{after} s of silence)")
    holder = request.backend.find_vm(holder_uuid) or VirtualMachine(holder_name, holder_uuid, "")
    try:
        with request.backend.fenced(holder, request.descriptor):
            detach_disk(request.backend, request.session, holder, request.descriptor,
                        request.datastore.url, request.volume)
    except NotFenced as exc:
        raise VmdkopsError(f"{refused}, whose plugin has been silent for {silent} s, but it cannot be cut "
                           f"off: {exc}; nothing was changed. {_remedy(request, holder_name)}") from None
    detail = (f"volume {request.full_name} taken over from VM {holder_name}, silent {silent} s, "
              f"by VM {request.vm.name}")
    log.warning("%s", detail)
    if request.session is not None:
        audit.write(request.session.get_bind(), source="executor", actor=f"vm:{request.vm.name}",
                    action="takeover", vmgroup=request.tenant.name, vm=request.vm.name,
                    target=request.full_name, outcome="ok", detail=detail)


def _remedy(request, holder_name):
    return (f"If VM {holder_name} is dead, power it off, or detach the volume from it: vmdkops_admin "
            f"volume detach --volume={request.full_name} --vmgroup={request.tenant.name} --force")
