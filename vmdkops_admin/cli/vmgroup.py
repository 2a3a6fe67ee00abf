"""``vmdkops_admin vmgroup``: vmgroups, their VMs and their datastore access."""

import click

from ..errors import REPLACE_VM_EMPTY
from .options import backend, command, group, output_format_option, with_db
from .render import Column, emit_message, emit_records
from .types import DatastoreType, datastore_option, name_option, size_options, vm_list_option, vmgroup_option


def _size_text(mb):
    from ..sizes import format_quota_mb

    return format_quota_mb(mb)


VMGROUP_COLUMNS = (
    Column("Uuid", "uuid"),
    Column("Name", "name"),
    Column("Description", "description"),
    Column("Default_datastore", "default_datastore"),
    Column("VM_list", "vms", lambda vms: ",".join(vm["name"] for vm in vms)),
    Column("Takeover_after", "takeover_after", lambda seconds: "off" if seconds is None else f"{seconds}s"),
)
VM_COLUMNS = (Column("Uuid", "uuid"), Column("Name", "name"))
ACCESS_COLUMNS = (
    Column("Datastore", "datastore"),
    Column("Allow_create", "allow_create"),
    Column("Max_volume_size", "max_volume_size", _size_text),
    Column("Total_size", "total_size", _size_text),
)


UNSET = object()


def _takeover_after(_ctx, _param, value):
    from ..admin.reports import parse_duration
    from ..errors import VmdkopsError

    if value is None:
        return UNSET
    if value.strip().lower() == "off":
        return None
    try:
        seconds = int(parse_duration(value).total_seconds())
    except VmdkopsError as exc:
        raise click.BadParameter(exc.message) from None
    if seconds < 1:
        raise click.BadParameter(f"'{value}': at least 1s, or off")
    return seconds


takeover_after_option = click.option(
    "--takeover-after", metavar="DURATION|off", callback=_takeover_after,
    help="How long a VM's plugin may be silent before another VM of the vmgroup may take its "
         "volumes over, once the VM is cut off from them (default 30s; off: never)")

vmgroup = group("vmgroup", "Administer and monitor volume access control")


@command(vmgroup, "create", "Create a new vmgroup")
@vmgroup_option
@click.option("--description", default="", help="The description of the vmgroup")
@vm_list_option("A list of VM names (or uuids) to place in this vmgroup", required=False, metavar="vm1,vm2,...")
@click.option("--default-datastore", required=True, type=DatastoreType(),
              help="Datastore to be used by default for volumes placement")
@takeover_after_option
def create(name, description, vm_list, default_datastore, takeover_after):
    """vmdkops_admin vmgroup create --name=vg1 --default-datastore=datastore1 --vm-list=vm1,vm2"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.create)(backend(), name, default_datastore, description, vm_list,
                                     **({} if takeover_after is UNSET else {"takeover_after": takeover_after})))


@command(vmgroup, "update", "Update an existing vmgroup")
@vmgroup_option
@click.option("--new-name", help="The new name of the vmgroup")
@click.option("--description",
              help="The new description of the vmgroup ('' clears it)")
@click.option("--default-datastore", type=DatastoreType(),
              help="Datastore to be used by default for volumes placement")
@takeover_after_option
def update(name, new_name, description, default_datastore, takeover_after):
    """vmdkops_admin vmgroup update --name=vg1 --new-name=web --description='web servers'"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.update)(backend(), name, new_name, description, default_datastore,
                                     **({} if takeover_after is UNSET else {"takeover_after": takeover_after})))


@command(vmgroup, "rm", "Delete a vmgroup")
@vmgroup_option
@click.option("--remove-volumes", is_flag=True,
              help="BE CAREFUL: Removes this vmgroup volumes when removing a vmgroup")
@click.option("--force", is_flag=True,
              help="Force operation, ignore warnings (removes a vmgroup that still has VMs; "
                   "they fall back to _DEFAULT)")
def rm(name, remove_volumes, force):
    """vmdkops_admin vmgroup rm --name=vg1 --remove-volumes"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.remove)(backend(), name, remove_volumes, force))


@command(vmgroup, "ls", "List vmgroups and the VMs they are applied to", audited=False)
@output_format_option
def ls(output_format):
    """vmdkops_admin vmgroup ls --output-format=json"""
    from ..admin import vmgroups as lib
    from ..db import modes

    if modes.detect().mode is modes.Mode.NOT_CONFIGURED:
        emit_records(VMGROUP_COLUMNS, lib.not_configured_vmgroups())
        return
    emit_records(VMGROUP_COLUMNS, with_db(lib.list_vmgroups)(backend()))


vm = group("vm", "Add, remove, replace and list VMs in a vmgroup", vmgroup)


@command(vm, "add", "Add a VM(s) to a vmgroup")
@name_option("Vmgroup to add the VM to")
@vm_list_option("A list of VM names (or uuids) to add to this vmgroup")
def vm_add(name, vm_list):
    """vmdkops_admin vmgroup vm add --name=vg1 --vm-list=vm3,vm4"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.vm_add)(backend(), name, vm_list))


@command(vm, "rm", "Remove VM(s) from a vmgroup")
@name_option("Vmgroup to remove the VM from")
@vm_list_option("A list of VM names (or uuids) to rm from this vmgroup")
def vm_rm(name, vm_list):
    """vmdkops_admin vmgroup vm rm --name=vg1 --vm-list=vm3"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.vm_remove)(backend(), name, vm_list))


@command(vm, "replace", "Replace VM(s) for a vmgroup")
@name_option("Vmgroup to replace the VM for")
@vm_list_option("A list of VM names (or uuids) to replace for this vmgroup", empty_message=REPLACE_VM_EMPTY)
def vm_replace(name, vm_list):
    """vmdkops_admin vmgroup vm replace --name=vg1 --vm-list=vm5,vm6"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.vm_replace)(backend(), name, vm_list))


@command(vm, "ls", "list VMs in a vmgroup", audited=False)
@name_option("Vmgroup to list the VMs for")
@output_format_option
def vm_ls(name, output_format):
    """vmdkops_admin vmgroup vm ls --name=vg1"""
    from ..admin import vmgroups as lib
    from ..db import modes
    from ..errors import DEFAULT_VM_LS, INIT_NEEDED, InvalidArgument, NotConfigured
    from ..names import DEFAULT_VMGROUP

    if name == DEFAULT_VMGROUP:
        raise InvalidArgument(DEFAULT_VM_LS)
    if modes.detect().mode is modes.Mode.NOT_CONFIGURED:
        raise NotConfigured(INIT_NEEDED)
    emit_records(VM_COLUMNS, with_db(lib.vm_list)(backend(), name))


access = group("access", "Add or remove Datastore access and quotas for a vmgroup", vmgroup)


@command(access, "add", "Add a datastore access for a vmgroup")
@vmgroup_option
@datastore_option("Datastore which access is controlled (or _VM_DS, _ALL_DS)")
@click.option("--allow-create", is_flag=True, help="Allow create and delete on datastore if set")
@size_options(clearable=False)
def access_add(name, datastore, allow_create, volume_maxsize, volume_totalsize):
    """vmdkops_admin vmgroup access add --name=vg1 --datastore=ds2 --allow-create --volume-maxsize=500MB --volume-totalsize=2GB"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.access_add)(name, datastore, allow_create, volume_maxsize, volume_totalsize))


@command(access, "set", "Modify datastore access for a vmgroup")
@vmgroup_option
@datastore_option("Datastore name (or _VM_DS, _ALL_DS)")
@click.option("--allow-create", metavar="Value{True|False} - e.g. True",
              help="Allow create and delete on datastore if set to True; disallow create "
                   "and delete on datastore if set to False")
@size_options(clearable=True)
def access_set(name, datastore, allow_create, volume_maxsize, volume_totalsize):
    """vmdkops_admin vmgroup access set --name=vg1 --datastore=ds2 --allow-create=False --volume-totalsize=unset"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.access_set)(name, datastore, allow_create, volume_maxsize, volume_totalsize))


@command(access, "rm", "Remove all access to a datastore for a vmgroup")
@vmgroup_option
@datastore_option("Datastore which access is controlled")
def access_rm(name, datastore):
    """vmdkops_admin vmgroup access rm --name=vg1 --datastore=ds2"""
    from ..admin import vmgroups as lib

    emit_message(with_db(lib.access_remove)(name, datastore))


@command(access, "ls", "List all access info for a vmgroup", audited=False)
@vmgroup_option
@output_format_option
def access_ls(name, output_format):
    """vmdkops_admin vmgroup access ls --name=vg1"""
    from ..admin import vmgroups as lib

    emit_records(ACCESS_COLUMNS, with_db(lib.access_list)(backend(), name))
