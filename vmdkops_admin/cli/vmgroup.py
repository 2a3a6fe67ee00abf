"""``vmdkops_admin vmgroup``: vmgroups, their VMs and their datastore access."""

import click

from .options import backend, command, group, output_format_option, with_db
from .render import Column, emit_message, emit_records

SIZE_METAVAR = "Num{MB,GB,TB} - e.g. 2TB"


def _size_text(mb):
    from ..sizes import format_quota_mb

    return format_quota_mb(mb)


VMGROUP_COLUMNS = (
    Column("Uuid", "uuid"),
    Column("Name", "name"),
    Column("Description", "description"),
    Column("Default_datastore", "default_datastore"),
    Column("VM_list", "vms", lambda vms: ",".join(vm["name"] for vm in vms)),
)
VM_COLUMNS = (Column("Uuid", "uuid"), Column("Name", "name"))
ACCESS_COLUMNS = (
    Column("Datastore", "datastore"),
    Column("Allow_create", "allow_create"),
    Column("Max_volume_size", "max_volume_size", _size_text),
    Column("Total_size", "total_size", _size_text),
)


def register(cli):
    vmgroup = group("vmgroup", "Administer and monitor volume access control", cli)

    @command(vmgroup, "create", "Create a new vmgroup")
    @click.option("--name", required=True, help="The name of the vmgroup")
    @click.option("--description", default="", help="The description of the vmgroup")
    @click.option("--vm-list", metavar="vm1,vm2,...",
                  help="A list of VM names (or uuids) to place in this vmgroup")
    @click.option("--default-datastore", required=True,
                  help="Datastore to be used by default for volumes placement")
    @with_db
    def create(session, name, description, vm_list, default_datastore):
        from .. import vmgroup as lib

        emit_message(lib.create(session, backend(), name, default_datastore, description, vm_list))

    @command(vmgroup, "update", "Update an existing vmgroup")
    @click.option("--name", required=True, help="The name of the vmgroup")
    @click.option("--new-name", help="The new name of the vmgroup")
    @click.option("--description",
                  help="The new description of the vmgroup ('' clears it)")
    @click.option("--default-datastore",
                  help="Datastore to be used by default for volumes placement")
    @with_db
    def update(session, name, new_name, description, default_datastore):
        from .. import vmgroup as lib

        emit_message(lib.update(session, backend(), name, new_name, description, default_datastore))

    @command(vmgroup, "rm", "Delete a vmgroup")
    @click.option("--name", required=True, help="The name of the vmgroup")
    @click.option("--remove-volumes", is_flag=True,
                  help="BE CAREFUL: Removes this vmgroup volumes when removing a vmgroup")
    @click.option("--force", is_flag=True,
                  help="Force operation, ignore warnings (removes a vmgroup that still has VMs; "
                       "they fall back to _DEFAULT)")
    @with_db
    def rm(session, name, remove_volumes, force):
        from .. import vmgroup as lib

        emit_message(lib.remove(session, backend(), name, remove_volumes, force))

    @command(vmgroup, "ls", "List vmgroups and the VMs they are applied to", audited=False)
    @output_format_option
    def ls(output_format):
        from .. import config
        from .. import vmgroup as lib

        if config.detect().mode is config.Mode.NOT_CONFIGURED:
            emit_records(VMGROUP_COLUMNS, lib.not_configured_vmgroups())
            return
        emit_records(VMGROUP_COLUMNS, with_db(lib.list_vmgroups)(backend()))

    vm = group("vm", "Add, remove, replace and list VMs in a vmgroup", vmgroup)

    def vm_command(name, help_text, name_help, vm_list_help):
        def decorate(function):
            function = with_db(function)
            function = click.option("--vm-list", required=True, metavar="VM_LIST",
                                    help=vm_list_help)(function)
            function = click.option("--name", required=True, help=name_help)(function)
            return command(vm, name, help_text)(function)
        return decorate

    @vm_command("add", "Add a VM(s) to a vmgroup", "Vmgroup to add the VM to",
                "A list of VM names (or uuids) to add to this vmgroup")
    def vm_add(session, name, vm_list):
        from .. import vmgroup as lib

        emit_message(lib.vm_add(session, backend(), name, vm_list))

    @vm_command("rm", "Remove VM(s) from a vmgroup", "Vmgroup to remove the VM from",
                "A list of VM names (or uuids) to rm from this vmgroup")
    def vm_rm(session, name, vm_list):
        from .. import vmgroup as lib

        emit_message(lib.vm_remove(session, backend(), name, vm_list))

    @vm_command("replace", "Replace VM(s) for a vmgroup", "Vmgroup to replace the VM for",
                "A list of VM names (or uuids) to replace for this vmgroup")
    def vm_replace(session, name, vm_list):
        from .. import vmgroup as lib

        emit_message(lib.vm_replace(session, backend(), name, vm_list))

    @command(vm, "ls", "list VMs in a vmgroup", audited=False)
    @click.option("--name", required=True, help="Vmgroup to list the VMs for")
    @output_format_option
    def vm_ls(name, output_format):
        from .. import config
        from .. import vmgroup as lib
        from ..errors import DEFAULT_VM_LS, INIT_NEEDED, InvalidArgument, NotConfigured
        from ..names import DEFAULT_VMGROUP

        if name == DEFAULT_VMGROUP:
            raise InvalidArgument(DEFAULT_VM_LS)
        if config.detect().mode is config.Mode.NOT_CONFIGURED:
            raise NotConfigured(INIT_NEEDED)
        emit_records(VM_COLUMNS, with_db(lib.vm_list)(backend(), name))

    access = group("access", "Add or remove Datastore access and quotas for a vmgroup", vmgroup)

    @command(access, "add", "Add a datastore access for a vmgroup")
    @click.option("--name", required=True, help="The name of the vmgroup")
    @click.option("--datastore", required=True,
                  help="Datastore which access is controlled (or _VM_DS, _ALL_DS)")
    @click.option("--allow-create", is_flag=True, help="Allow create and delete on datastore if set")
    @click.option("--volume-maxsize", metavar=SIZE_METAVAR,
                  help="Maximum size of the volume that can be created")
    @click.option("--volume-totalsize", metavar=SIZE_METAVAR,
                  help="Maximum total size of all volume that can be created on the datastore "
                       "for this vmgroup")
    @with_db
    def access_add(session, name, datastore, allow_create, volume_maxsize, volume_totalsize):
        from .. import vmgroup as lib

        emit_message(lib.access_add(session, backend(), name, datastore, allow_create,
                                    volume_maxsize, volume_totalsize))

    @command(access, "set", "Modify datastore access for a vmgroup")
    @click.option("--name", required=True, help="The name of the vmgroup")
    @click.option("--datastore", required=True, help="Datastore name (or _VM_DS, _ALL_DS)")
    @click.option("--allow-create", metavar="Value{True|False} - e.g. True",
                  help="Allow create and delete on datastore if set to True; disallow create "
                       "and delete on datastore if set to False")
    @click.option("--volume-maxsize", metavar=SIZE_METAVAR,
                  help="Maximum size of the volume that can be created ('unset' for no limit)")
    @click.option("--volume-totalsize", metavar=SIZE_METAVAR,
                  help="Maximum total size of all volume that can be created on the datastore "
                       "for this vmgroup ('unset' for no limit)")
    @with_db
    def access_set(session, name, datastore, allow_create, volume_maxsize, volume_totalsize):
        from .. import vmgroup as lib

        emit_message(lib.access_set(session, backend(), name, datastore, allow_create,
                                    volume_maxsize, volume_totalsize))

    @command(access, "rm", "Remove all access to a datastore for a vmgroup")
    @click.option("--name", required=True, help="The name of the vmgroup")
    @click.option("--datastore", required=True, help="Datastore which access is controlled")
    @with_db
    def access_rm(session, name, datastore):
        from .. import vmgroup as lib

        emit_message(lib.access_remove(session, backend(), name, datastore))

    @command(access, "ls", "List all access info for a vmgroup", audited=False)
    @click.option("--name", required=True, help="The name of the vmgroup")
    @output_format_option
    @with_db
    def access_ls(session, name, output_format):
        from .. import vmgroup as lib

        emit_records(ACCESS_COLUMNS, lib.access_list(session, backend(), name))
