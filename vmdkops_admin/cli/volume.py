"""``vmdkops_admin volume``: list volumes, edit their settings, force-detach
them and reconcile the index with the disks."""

import click

from .options import backend, command, group, output_format_option, with_db
from .render import Column, emit_message, emit_records
from .types import DiskSizeMB, owner_option, volume_option

DEFAULT = ("volume", "datastore", "vmgroup", "capacity", "used", "fstype", "policy", "disk-format",
           "attached-to", "access", "attach-as", "created-by", "created")
CHOICES = DEFAULT + ("taken-over",)  # the last takeover: only when asked for
SHORT = ("volume", "capacity", "disk-format", "attached-to")
RECONCILE_COLUMNS = (Column("Volume", "volume"), Column("Problem", "problem"),
                     Column("Action", "action"))


class ColumnList(click.ParamType):
    """``-c``: a comma separated list of column names."""
    name = "Col1,Col2,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        chosen = value.split(",")
        bad = [c for c in chosen if c not in CHOICES]
        if bad:
            self.fail(f"invalid choices: {','.join(bad)} (choices must be a comma separated list of "
                      f"only the following words \n {list(CHOICES)}. No spaces are allowed between "
                      "choices.)", param, ctx)
        return tuple(chosen)


def _columns(chosen):
    from ..admin.volumes import COLUMNS, created_text, size_text

    text = {"capacity_mb": size_text, "used_mb": size_text, "created": created_text,
            "attached_to": lambda vm: "detached" if vm is None else vm}
    return [Column(header, key, text.get(key, lambda v: "N/A" if v is None else str(v)))
            for choice, header, key in COLUMNS if choice in chosen]


def _list(chosen, vmgroup):
    from ..admin.volumes import list_volumes
    from ..db import modes

    with modes.reader() as query:
        return list_volumes(query, backend(), vmgroup, "used" in chosen, "taken-over" in chosen)


volume = group("volume", "Manipulate volumes")


@command(volume, "ls", "List volumes", audited=False)
@click.option("-c", "columns", type=ColumnList(), default=None,
              help=f"Display selected columns: Choices = {list(CHOICES)}")
@click.option("--vmgroup", metavar="VMGROUP",
              help="Displays volumes for a given vmgroup (a glob such as 'dev*')")
@output_format_option
def ls(columns, vmgroup, output_format):
    """vmdkops_admin volume ls -c volume,datastore,vmgroup,capacity,used --vmgroup=vg1"""
    chosen = columns or DEFAULT
    emit_records(_columns(chosen), _list(chosen, vmgroup))


@command(volume, "shortls", "List volumes with limited information", audited=False)
@click.option("--vmgroup", metavar="VMGROUP", help="Displays volumes for a given vmgroup")
@output_format_option
def shortls(vmgroup, output_format):
    """vmdkops_admin volume shortls"""
    emit_records(_columns(SHORT), _list(SHORT, vmgroup))


@command(volume, "set", "Edit settings for a given volume")
@volume_option('Volume to set options for, specified as "volume@datastore".')
@owner_option(required=True)
@click.option("--options", required=True,
              help="Options to be set on the volume: access=read-write|read-only, "
                   "attach-as=independent_persistent|persistent.")
def set_(full_name, vmgroup, options):
    """vmdkops_admin volume set --volume=vol1@datastore1 --vmgroup=vg1 --options='access=read-only'"""
    from ..admin.volumes import set_options

    emit_message(with_db(set_options, optional=True)(backend(), full_name, vmgroup, options))


@command(volume, "detach", "Detach a volume from the VM that holds it (when that VM is gone "
         "or lost its vmgroup)")
@volume_option()
@owner_option()
@click.option("--force", is_flag=True, required=True,
              help="Required: detach without the VM's consent.")
def detach(full_name, vmgroup, force):
    """vmdkops_admin volume detach --volume=vol1@datastore1 --force"""
    from ..admin.volumes import force_detach

    emit_message(with_db(force_detach, optional=True)(backend(), full_name, vmgroup))


@command(volume, "resize", "Grow a detached volume; its filesystem grows at its next mount")
@volume_option()
@click.option("--size", required=True, type=DiskSizeMB(), metavar="Num{MB,GB,TB}",
              help="The new size, larger than the volume's (e.g. 20GB)")
@owner_option()
def resize(full_name, size, vmgroup):
    """vmdkops_admin volume resize --volume=vol1@datastore1 --size=20GB --vmgroup=vg1"""
    from ..admin.volumes import resize as grow

    emit_message(with_db(grow, optional=True)(backend(), full_name, vmgroup, size))


@command(volume, "reconcile", "Bring the index, metadata, disks and attachments back into "
         "agreement; repair what is safe, report the rest")
@click.option("--dry-run", is_flag=True, help="Only say what would be done")
@click.option("--adopt", is_flag=True,
              help="Also adopt volumes made by the original VDVS: give them our metadata "
                   "from theirs (kept) and index them")
@output_format_option
def reconcile(dry_run, adopt, output_format):
    """vmdkops_admin volume reconcile --dry-run"""
    from ..admin.reconcile import reconcile as run
    from .render import output_format as chosen_format
    from .render import progress_bar

    findings = with_db(run, optional=True)(backend(), dry_run, adopt, progress_bar("Reconciling"))
    if not findings and chosen_format() == "table":
        emit_message("Index, metadata, disks and attachments agree.")
        return
    emit_records(RECONCILE_COLUMNS, [f.__dict__ for f in findings])
