"""Vmgroups (tenants): their VMs and their per-datastore access privileges.

Each function takes an open session and the backend, validates everything
before it changes anything, and leaves the commit to its caller, so a command
is one transaction that changes all or nothing. VMs are stored by uuid with the
name they had when added; listings show the inventory's current name."""

import uuid as uuidlib

from sqlalchemy import func, select

from .. import errors
from ..backends import ALL_DS, VM_DS, datastore_names
from ..db.models import Privilege, Vm, VmGroup, Volume
from ..errors import AlreadyExists, InvalidArgument, NotFound, VmdkopsError
from ..names import (DEFAULT_TAKEOVER_AFTER, DEFAULT_VMGROUP, DEFAULT_VMGROUP_DESCRIPTION, DEFAULT_VMGROUP_UUID,
                     validate_vmgroup_name)

UNCHANGED = object()  # an update that leaves a setting as it is


# -- lookups and validation -------------------------------------------------------

def get_vmgroup(session, name):
    group = VmGroup.named(session, name)
    if group is None:
        raise NotFound(errors.TENANT_NOT_EXIST.format(name))
    return group


def validate_description(description):
    if description is not None and len(description) > 256:
        raise InvalidArgument(errors.TENANT_DESC_TOO_LONG.format(description))


def split_vm_list(text):
    """``--vm-list`` as a list of names: split on commas, blanks trimmed."""
    names = [name.strip() for name in text.split(",")]
    if not any(names):
        raise InvalidArgument(errors.VM_LIST_EMPTY)
    if not all(names):
        raise InvalidArgument(f"VM list '{text}' contains an empty name")
    return names


def _check_duplicates(names):
    if len(set(names)) != len(names):
        raise InvalidArgument(errors.VM_DUPLICATE.format(names))


def resolve_vms(backend, names):
    """Inventory VMs for ``names`` (names or uuids), all of them or an error
    naming every one that is unknown."""
    _check_duplicates(names)
    found = [(name, backend.find_vm(name)) for name in names]
    missing = [name for name, vm in found if vm is None]
    if missing:
        raise NotFound(errors.VM_NOT_FOUND.format(",".join(missing)))
    return [vm for _, vm in found]


def has_attached_volumes(session, vm_uuid):
    return session.scalar(
        select(Volume.id).where(Volume.attached_vm_uuid == vm_uuid.lower()).limit(1)) is not None


def _membership(session, vm_uuid):
    return session.scalars(select(Vm).where(Vm.uuid == vm_uuid.lower())).first()


def _check_can_join(session, vms, prefix, group=None):
    """Refuse VMs that are members of a vmgroup (``group`` itself gets its own
    message) or that have volumes attached."""
    for vm in vms:
        member = _membership(session, vm.uuid)
        if member is not None:
            template = (errors.VM_ALREADY_IN_TENANT if member.vmgroup is group
                        else errors.VM_IN_ANOTHER_TENANT)
            raise AlreadyExists(template.format(vm.name, member.vmgroup.name))
    _check_no_attached(session, vms, prefix)


def _check_no_attached(session, vms, prefix):
    for vm in vms:
        if has_attached_volumes(session, vm.uuid):
            raise VmdkopsError(prefix + errors.VM_WITH_MOUNTED_VOLUMES.format(vm.name))


def _default_datastore_url(datastore):
    if datastore.name == ALL_DS:
        raise InvalidArgument(errors.DS_DEFAULT_CANNOT_USE_ALL_DS)
    return datastore.url


def _ensure_full_privilege(group, url):
    if not any(p.datastore_url == url for p in group.privileges):
        group.privileges.append(Privilege(datastore_url=url, allow_create=True))


def _vm_record(vm, live_names):
    return {"uuid": vm.uuid, "name": live_names.get(vm.uuid) or vm.name or "N/A"}


def _live_names(backend):
    return {vm.uuid.lower(): vm.name for vm in backend.vms()}


# -- vmgroup create | update | rm | ls ------------------------------------------------

def create(session, backend, name, default_datastore, description="", names=None,
           takeover_after=DEFAULT_TAKEOVER_AFTER):
    """A vmgroup of the VMs ``names`` whose volumes go to ``default_datastore``
    (a ``Datastore``) by default; ``takeover_after``: seconds of a VM's
    silence before its volumes may be taken over, None for never."""
    validate_vmgroup_name(name)
    validate_description(description)
    vms = []
    if names is not None:
        if name == DEFAULT_VMGROUP:
            raise InvalidArgument(errors.FEATURE_NOT_SUPPORTED.format(DEFAULT_VMGROUP))
        vms = resolve_vms(backend, names)
        _check_can_join(session, vms, "Cannot add VM to vmgroup ")
    url = _default_datastore_url(default_datastore)
    if VmGroup.named(session, name) is not None:
        raise AlreadyExists(errors.TENANT_ALREADY_EXIST.format(name))

    group = VmGroup(
        uuid=DEFAULT_VMGROUP_UUID if name == DEFAULT_VMGROUP else str(uuidlib.uuid4()),
        name=name, description=description or "", default_datastore_url=url,
        takeover_after=takeover_after)
    group.vms = [Vm(uuid=vm.uuid.lower(), name=vm.name) for vm in vms]
    _ensure_full_privilege(group, url)
    session.add(group)
    session.flush()
    if name == DEFAULT_VMGROUP:
        return "vmgroup '_DEFAULT' is created."
    return (f"vmgroup '{name}' is created. Do not forget to run 'vmgroup vm add' "
            "to add vm to vmgroup.")


def update(session, backend, name, new_name=None, description=None, default_datastore=None,
           takeover_after=UNCHANGED):
    group = get_vmgroup(session, name)
    url = _default_datastore_url(default_datastore) if default_datastore else None
    if new_name is not None:
        if name == DEFAULT_VMGROUP:
            raise InvalidArgument(errors.TENANT_NAME_INVALID.format(
                name, "rename of vmgroups other than _DEFAULT"))
        validate_vmgroup_name(new_name)
        if new_name != name and VmGroup.named(session, new_name) is not None:
            raise AlreadyExists(errors.TENANT_ALREADY_EXIST.format(new_name))
    validate_description(description)

    if url is not None and url != group.default_datastore_url:
        group.default_datastore_url = url
        _ensure_full_privilege(group, url)
    if description is not None:
        group.description = description
    if takeover_after is not UNCHANGED:
        group.takeover_after = takeover_after
    if new_name is not None and new_name != name:
        group.name = new_name
        session.flush()
        backend.vmgroup_renamed(group.uuid, name, new_name)
    session.flush()
    return "vmgroup modify succeeded"


def remove(session, backend, name, remove_volumes=False, force=False):
    group = get_vmgroup(session, name)
    volume_count = session.scalar(
        select(func.count(Volume.id)).where(Volume.vmgroup_id == group.id))
    if volume_count and not remove_volumes:
        raise VmdkopsError(errors.TENANT_HAS_VOLUMES)
    if group.vms and not force:
        raise VmdkopsError(errors.TENANT_NOT_EMPTY.format(name))
    if volume_count:
        from .volumes import remove_vmgroup_volumes

        remove_vmgroup_volumes(session, backend, group)
    group_uuid = group.uuid
    session.delete(group)
    session.flush()
    backend.vmgroup_removed(group_uuid, name)
    if remove_volumes:
        return "All Volumes will be removed. vmgroup rm succeeded"
    return "vmgroup rm succeeded"


def list_vmgroups(session, backend):
    """Records of every vmgroup in creation order."""
    from sqlalchemy.orm import selectinload

    live = _live_names(backend)
    name_of = datastore_names(backend)
    groups = session.scalars(
        select(VmGroup).options(selectinload(VmGroup.vms)).order_by(VmGroup.id))
    return [{"uuid": group.uuid, "name": group.name, "description": group.description,
             "default_datastore": name_of(group.default_datastore_url),
             "vms": [_vm_record(vm, live) for vm in group.vms], "takeover_after": group.takeover_after}
            for group in groups]


def not_configured_vmgroups():
    """What ``vmgroup ls`` shows without a config DB: the simulated ``_DEFAULT``."""
    return [{"uuid": DEFAULT_VMGROUP_UUID, "name": DEFAULT_VMGROUP,
             "description": DEFAULT_VMGROUP_DESCRIPTION, "default_datastore": VM_DS, "vms": [],
             "takeover_after": DEFAULT_TAKEOVER_AFTER}]


# -- vmgroup vm add | rm | replace | ls ----------------------------------------------

def _member_group(session, name):
    if name == DEFAULT_VMGROUP:
        raise InvalidArgument(errors.FEATURE_NOT_SUPPORTED.format(DEFAULT_VMGROUP))
    return get_vmgroup(session, name)


def vm_add(session, backend, name, names):
    group = _member_group(session, name)
    vms = resolve_vms(backend, names)
    _check_can_join(session, vms, "Cannot add VM to vmgroup ", group)
    group.vms.extend(Vm(uuid=vm.uuid.lower(), name=vm.name) for vm in vms)
    session.flush()
    return "vmgroup vm add succeeded"


def vm_remove(session, backend, name, names):
    group = _member_group(session, name)
    _check_duplicates(names)
    members, missing = [], []
    for vm_name in names:
        vm = backend.find_vm(vm_name)
        # A VM that the inventory no longer knows (destroyed, or registered on
        # another host) is still removable by its stored name or uuid.
        member = (next((m for m in group.vms if m.uuid == vm.uuid.lower()), None) if vm else
                  next((m for m in group.vms if vm_name in (m.uuid, m.name)), None))
        if vm is None and member is None:
            missing.append(vm_name)
        members.append((vm_name, vm, member))
    if missing:
        raise NotFound(errors.VM_NOT_FOUND.format(",".join(missing)))
    for vm_name, vm, member in members:
        if has_attached_volumes(session, vm.uuid if vm else member.uuid):
            raise VmdkopsError("Cannot complete vmgroup vm rm. "
                               + errors.VM_WITH_MOUNTED_VOLUMES.format(vm_name))
        if member is None:
            raise NotFound(errors.VM_NOT_IN_TENANT.format(vm_name, name))
    for _, _, member in members:
        group.vms.remove(member)
    session.flush()
    return "vmgroup vm rm succeeded"


def vm_replace(session, backend, name, names):
    """Make the vmgroup's members exactly ``names``; members that stay are kept."""
    group = _member_group(session, name)
    vms = resolve_vms(backend, names)
    wanted = {vm.uuid.lower() for vm in vms}
    current = {member.uuid for member in group.vms}
    incoming = [vm for vm in vms if vm.uuid.lower() not in current]
    for vm in incoming:
        member = _membership(session, vm.uuid)
        if member is not None:
            raise AlreadyExists(errors.VM_IN_ANOTHER_TENANT.format(vm.name, member.vmgroup.name))
    outgoing = [member for member in group.vms if member.uuid not in wanted]
    live = _live_names(backend)
    prefix = "Cannot complete vmgroup vm replace. "
    _check_no_attached(session, incoming, prefix)
    for member in outgoing:
        if has_attached_volumes(session, member.uuid):
            raise VmdkopsError(prefix + errors.VM_WITH_MOUNTED_VOLUMES.format(
                live.get(member.uuid) or member.name))
    for member in outgoing:
        group.vms.remove(member)
    group.vms.extend(Vm(uuid=vm.uuid.lower(), name=vm.name) for vm in incoming)
    session.flush()
    return "vmgroup vm replace succeeded"


def vm_list(session, backend, name):
    if name == DEFAULT_VMGROUP:
        raise InvalidArgument(errors.DEFAULT_VM_LS)
    group = get_vmgroup(session, name)
    live = _live_names(backend)
    return [_vm_record(vm, live) for vm in group.vms]


# -- vmgroup access add | set | rm | ls ----------------------------------------------

def _find_privilege(group, url):
    return next((p for p in group.privileges if p.datastore_url == url), None)


def _check_sizes(max_volume_size, usage_quota):
    if max_volume_size is not None and usage_quota is not None and max_volume_size > usage_quota:
        raise InvalidArgument(errors.PRIVILEGE_INVALID_VOLUME_SIZE.format(max_volume_size, usage_quota))


def parse_allow_create(text):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise InvalidArgument(errors.PRIVILEGE_INVALID_ALLOW_CREATE_VALUE.format(text))


def access_add(session, name, datastore, allow_create=False, max_volume_mb=None, total_mb=None):
    """Access for a vmgroup to a ``Datastore``; sizes in MB, None or 0 for no limit."""
    group = get_vmgroup(session, name)
    if _find_privilege(group, datastore.url) is not None:
        raise AlreadyExists(errors.PRIVILEGE_ALREADY_EXIST.format(name, datastore.name))
    max_size, quota = max_volume_mb or None, total_mb or None
    _check_sizes(max_size, quota)
    group.privileges.append(Privilege(datastore_url=datastore.url, allow_create=allow_create,
                                      max_volume_size=max_size, usage_quota=quota))
    session.flush()
    return "vmgroup access add succeeded"


def access_set(session, name, datastore, allow_create=None, max_volume_mb=None, total_mb=None):
    """Change the given fields only (None: unchanged); a size of 0 puts a limit back to unlimited."""
    group = get_vmgroup(session, name)
    privilege = _find_privilege(group, datastore.url)
    if privilege is None:
        raise NotFound(errors.PRIVILEGE_NOT_FOUND.format(name, datastore.name))
    allow = parse_allow_create(allow_create) if allow_create is not None else privilege.allow_create
    max_size = privilege.max_volume_size if max_volume_mb is None else max_volume_mb or None
    quota = privilege.usage_quota if total_mb is None else total_mb or None
    _check_sizes(max_size, quota)
    privilege.allow_create, privilege.max_volume_size, privilege.usage_quota = allow, max_size, quota
    session.flush()
    return "vmgroup access set succeeded"


def access_remove(session, name, datastore):
    group = get_vmgroup(session, name)
    privilege = _find_privilege(group, datastore.url)
    if privilege is None:
        raise NotFound(errors.PRIVILEGE_NOT_FOUND.format(name, datastore.name))
    if datastore.url == group.default_datastore_url:
        raise InvalidArgument(errors.PRIVILEGE_REMOVE_NOT_ALLOWED)
    group.privileges.remove(privilege)
    session.flush()
    return "vmgroup access rm succeeded"


def access_list(session, backend, name):
    group = get_vmgroup(session, name)
    name_of = datastore_names(backend)
    return [{"datastore": name_of(p.datastore_url), "allow_create": p.allow_create,
             "max_volume_size": p.max_volume_size, "total_size": p.usage_quota}
            for p in group.privileges]
