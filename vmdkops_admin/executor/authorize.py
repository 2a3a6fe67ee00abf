"""Who a VM is in the auth DB and what it may do (spec esx-service §10).

A VM belongs to the vmgroup that lists it, else to ``_DEFAULT`` if that
exists. A request on a short name is checked against the vmgroup's default
datastore's privilege alone; on ``vol@ds`` against ds's own privilege, and
only when there is none, ``_VM_DS`` (if ds is the VM's datastore) and then
``_ALL_DS``. A quota is per vmgroup and real datastore; reaching it exactly
is allowed. Without a config DB (NotConfigured) everything is allowed."""

from dataclasses import dataclass, field
from typing import Optional

from sqlalchemy import func, select

from ..backends import ALL_DS, SPECIAL_DATASTORE_URLS, VM_DS
from ..db.models import Privilege, Vm, VmGroup, Volume
from ..errors import OPT_VOLUME_SIZE_INVALID, VmdkopsError
from ..names import DEFAULT_TAKEOVER_AFTER, DEFAULT_VMGROUP, DEFAULT_VMGROUP_UUID

VM_DS_URL = SPECIAL_DATASTORE_URLS[VM_DS]
ALL_DS_URL = SPECIAL_DATASTORE_URLS[ALL_DS]


class NotAuthorized(VmdkopsError):
    pass


@dataclass(frozen=True)
class Rule:
    allow_create: bool
    max_volume_size: Optional[int] = None
    usage_quota: Optional[int] = None


@dataclass
class Tenant:
    uuid: str
    name: str
    default_datastore_url: str
    id: Optional[int] = None  # None: simulated (no config DB)
    rules: dict = field(default_factory=dict)  # datastore url -> Rule
    takeover_after: Optional[int] = DEFAULT_TAKEOVER_AFTER  # None: never


def simulated_default():
    """``_DEFAULT`` as it is without a config DB: full access everywhere."""
    full = Rule(allow_create=True)
    return Tenant(DEFAULT_VMGROUP_UUID, DEFAULT_VMGROUP, VM_DS_URL,
                  rules={ALL_DS_URL: full, VM_DS_URL: full})


def tenant_of(session, vm):
    """The vmgroup a VM acts in; ``NotAuthorized`` if none."""
    group = session.scalars(
        select(VmGroup).join(Vm).where(Vm.uuid == vm.uuid.lower())).first()
    if group is None:
        group = session.scalars(select(VmGroup).where(VmGroup.name == DEFAULT_VMGROUP)).first()
    if group is None:
        raise NotAuthorized(f"VM {vm.name} does not belong to any vmgroup")
    return tenant_of_group(session, group)


def tenant_of_group(session, group):
    rules = {p.datastore_url: Rule(p.allow_create, p.max_volume_size, p.usage_quota)
             for p in session.scalars(select(Privilege).where(Privilege.vmgroup_id == group.id))}
    return Tenant(group.uuid, group.name, group.default_datastore_url, group.id, rules, group.takeover_after)


def rule_for(tenant, target_url, vm_datastore_url, short_name):
    """The privilege that decides, by the fallback rules above (None: no access)."""
    if short_name:
        return tenant.rules.get(tenant.default_datastore_url)
    rule = tenant.rules.get(target_url)
    if rule is None and target_url == vm_datastore_url:
        rule = tenant.rules.get(VM_DS_URL)
    if rule is None:
        rule = tenant.rules.get(ALL_DS_URL)
    return rule


def check(rule, cmd):
    """Privilege check of a command other than create."""
    if rule is None:
        raise NotAuthorized("No access privilege exists")
    if cmd == "remove" and not rule.allow_create:
        raise NotAuthorized("No delete privilege")


def check_create(rule, size_mb, used_mb):
    check(rule, "create")
    if not rule.allow_create:
        raise NotAuthorized("No create privilege")
    if size_mb <= 0:
        raise NotAuthorized(OPT_VOLUME_SIZE_INVALID)
    if rule.max_volume_size is not None and size_mb > rule.max_volume_size:
        raise NotAuthorized("Volume size exceeds the max volume size limit")
    if rule.usage_quota is not None and used_mb + size_mb > rule.usage_quota:
        raise NotAuthorized("The total volume size exceeds the usage quota")


def check_growth(rule, old_mb, new_mb, used_mb):
    """A volume growing from ``old_mb`` to ``new_mb``: the limits of a create."""
    if rule is None:
        return
    if rule.max_volume_size is not None and new_mb > rule.max_volume_size:
        raise NotAuthorized("Volume size exceeds the max volume size limit")
    if rule.usage_quota is not None and used_mb - old_mb + new_mb > rule.usage_quota:
        raise NotAuthorized("The total volume size exceeds the usage quota")


def used_mb(session, tenant, datastore_url):
    """Space the vmgroup holds on a datastore, volumes being made included."""
    return session.scalar(
        select(func.coalesce(func.sum(Volume.size_mb), 0))
        .where(Volume.vmgroup_id == tenant.id, Volume.datastore_url == datastore_url))
