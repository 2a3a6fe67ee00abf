"""``vmdkops_admin host``: the datastores and VMs the backend knows. On the
``local`` backend they are managed here; on vSphere they are what vSphere has."""

import click

from .options import backend, command, group, output_format_option, with_db
from .render import Column, emit_message, emit_records
from .types import name_option

DATASTORE_COLUMNS = (
    Column("Name", "name"), Column("Url", "url"), Column("Path", "path"), Column("Type", "type"),
    Column("Capacity", "capacity_mb", lambda mb: f"{mb}MB"),
    Column("Free", "free_mb", lambda mb: f"{mb}MB"),
)
VM_COLUMNS = (Column("Name", "name"), Column("Uuid", "uuid"), Column("Datastore", "datastore"),
              Column("Last_report", "last_report"))


host = group("host", "List (and on the local backend, manage) datastores and VMs")
datastore = group("datastore", "Datastores of the backend", host)
datastore_name = name_option("The name of the datastore")
vm_name = name_option("The name of the VM")
vm_name_or_uuid = name_option("The name (or uuid) of the VM")


@command(datastore, "add", "Register a directory as a datastore (local backend)")
@datastore_name
@click.option("--path", required=True, metavar="DIR", help="An existing directory")
def datastore_add(name, path):
    """vmdkops_admin host datastore add --name=ds2 --path=/srv/ds2"""
    ds = backend().add_datastore(name, path)
    emit_message(f"datastore '{ds.name}' added at {ds.path}")


@command(datastore, "rm", "Forget a datastore (local backend; its files are kept)")
@datastore_name
def datastore_rm(name):
    """vmdkops_admin host datastore rm --name=ds2"""
    backend().remove_datastore(name)
    emit_message(f"datastore '{name}' removed")


@command(datastore, "ls", "List datastores", audited=False)
@output_format_option
def datastore_ls(output_format):
    """vmdkops_admin host datastore ls"""
    records = []
    inventory = backend()
    for ds in inventory.datastores():
        capacity, free = inventory.space(ds)
        records.append({"name": ds.name, "url": ds.url, "path": ds.path, "type": ds.type,
                        "capacity_mb": capacity, "free_mb": free})
    emit_records(DATASTORE_COLUMNS, records)


vm = group("vm", "VMs (Docker hosts) of the backend", host)


@command(vm, "add", "Register a VM (local backend)")
@vm_name
@click.option("--uuid", "vm_uuid", help="Its BIOS uuid (default: a new random one)")
@click.option("--datastore", help="Its home datastore (default: datastore1)")
def vm_add(name, vm_uuid, datastore):
    """vmdkops_admin host vm add --name=docker2 --datastore=ds2"""
    added = backend().add_vm(name, vm_uuid, datastore)
    emit_message(f"VM '{added.name}' added with uuid {added.uuid}")


@command(vm, "rm", "Forget a VM (local backend); its credential stops working")
@vm_name
def vm_rm(name):
    """vmdkops_admin host vm rm --name=docker2"""
    from ..executor import credentials

    inventory = backend()
    found = inventory.find_vm(name)
    inventory.remove_vm(name)
    credentials.revoke(found.uuid)  # found: remove_vm said so otherwise
    emit_message(f"VM '{name}' removed")


@command(vm, "token", "Issue the credential a VM presents to vmdk-opsd over TCP or a unix socket")
@vm_name_or_uuid
@click.option("--rotate", is_flag=True,
              help="Replace the VM's credential (the old one stops working at once)")
def vm_token(name, rotate):
    """vmdkops_admin host vm token --name=docker2 --rotate"""
    from ..errors import VM_NOT_FOUND, AlreadyExists, NotFound
    from ..executor import credentials

    found = backend().find_vm(name)
    if found is None:
        raise NotFound(VM_NOT_FOUND.format(name))
    token = credentials.issue(found.uuid, rotate)
    if token is None:
        raise AlreadyExists(f"VM {found.name} already has a credential; use --rotate to "
                            "replace it (the old one stops working)")
    emit_message(token)


@command(vm, "power", "Say that a VM (local backend) is powered off or on: powered off, its "
         "volumes are detached so that other VMs can use them, and it can attach none")
@vm_name_or_uuid
@click.argument("state", type=click.Choice(["off", "on"]))
def vm_power(name, state):
    """vmdkops_admin host vm power --name=docker2 off"""
    from ..admin.volumes import power

    inventory = backend()
    if not inventory.can(inventory.POWER):
        inventory.set_power(name, state == "on")  # says why not, before the DB is opened
    emit_message(with_db(power, optional=True)(inventory, name, state == "on"))


@command(vm, "ls", "List VMs", audited=False)
@output_format_option
def vm_ls(output_format):
    """vmdkops_admin host vm ls"""
    from ..db.modes import reader
    from ..executor.liveness import age_text, last_reports

    with reader() as query:
        reports = last_reports(query) if query else {}
    emit_records(VM_COLUMNS, [{"name": v.name, "uuid": v.uuid, "datastore": v.datastore,
                               "last_report": age_text(reports.get(v.uuid))} for v in backend().vms()])
