"""``vmdkops_admin config``: create, remove, move, upgrade and show the config DB."""

import click

from .options import backend, command, group, output_format_option
from .render import emit_message, output_format, table

COUNT_COLUMNS = ("table", "read", "imported", "skipped")


def _emit_import_report(path, report, dry_run):
    if output_format() == "json":
        import json

        click.echo(json.dumps({
            "version": report.version, "dry_run": dry_run, "tables": report.counts(),
            "skipped": [{"table": t, "row": row, "reason": reason} for t, row, reason in report.skipped],
            "notes": report.notes}))
        return
    from ..admin.legacy import row_text

    lines = [("Dry run, nothing was changed: " if dry_run else "Imported ")
             + f"VDVS auth-db {path} (schema {report.version})", "",
             table(["Table", "Read", "Imported", "Skipped"],
                   [[str(c[k]) for k in COUNT_COLUMNS] for c in report.counts()])]
    if report.skipped:
        lines += ["", "Not imported:", table(["Table", "Row", "Reason"],
                                             [[t, row_text(row), reason] for t, row, reason in report.skipped])]
    if report.notes:
        lines += ["", "Notes:"] + [f"- {note}" for note in report.notes]
    click.echo("\n".join(lines))


config = group("config", "Init and manage Config DB to enable quotas and access control")


@command(config, "init", "Init Config DB to allow quotas and access groups, aka vmgroups")
@click.option("--datastore", help="Config DB will be placed on a shared datastore")
@click.option("--local", is_flag=True, help="Allows local (SingleNode) Init")
@click.option("--db-url", metavar="URL",
              help="Use a shared database, e.g. postgresql://user:password@host/db "
                   "(MultiNode); the URL is kept in a root-only file")
@click.option("--force", is_flag=True, help="Force operation, ignore warnings")
def init(datastore, local, db_url, force):
    """vmdkops_admin config init --local"""
    from ..db import lifecycle as lib

    emit_message(lib.init(backend(), local, datastore, db_url, force))


@command(config, "rm", "Remove Config DB")
@click.option("--local", is_flag=True, help="Remove only local link or local DB")
@click.option("--unlink", is_flag=True, help="Remove the local link to shared DB")
@click.option("--no-backup", is_flag=True, help="Do not create DB backup before removing")
@click.option("--confirm", is_flag=True, help="Explicitly confirm the operation")
def rm(local, unlink, no_backup, confirm):
    """vmdkops_admin config rm --local --confirm"""
    from ..db import lifecycle as lib

    emit_message(lib.remove(local, unlink, no_backup, confirm))


@command(config, "mv", "Relocate Config DB from its current location")
@click.option("--to", metavar="DATASTORE", help="Where to move the DB to: a datastore.")
@click.option("--local", is_flag=True,
              help="Copy a shared DB to this host and use the copy (SingleNode)")
@click.option("--force", is_flag=True, help="Force operation, ignore warnings")
def mv(to, local, force):
    """vmdkops_admin config mv --to=datastore2"""
    from ..db import lifecycle as lib

    if to is None and not local:
        raise click.UsageError("one of '--to' or '--local' is required")
    emit_message(lib.move(backend(), to, local, force))


@command(config, "upgrade", "Upgrade the Config DB schema to this version (keeps a backup)")
def upgrade():
    """vmdkops_admin config upgrade"""
    from ..db import lifecycle as lib

    emit_message(lib.upgrade())


@command(config, "import", "Import the vmgroups, VMs, privileges and volume records of an "
         "original VDVS auth-db (schema 1.0, 1.1 or 1.2); the file is only read")
@click.option("--from-vdvs", "path", required=True, metavar="PATH",
              help="The original's auth-db file (e.g. a copy of /etc/vmware/vmdkops/auth-db)")
@click.option("--dry-run", is_flag=True, help="Print the report and change nothing")
@click.option("--merge", is_flag=True,
              help="Import into a DB that has vmgroups already; clashing rows are reported "
                   "and skipped, never overwritten")
@output_format_option
def import_(path, dry_run, merge, output_format):
    """vmdkops_admin config import --from-vdvs ./auth-db --dry-run"""
    from ..admin.legacy import import_auth_db
    from ..db import modes as lib
    from .render import progress_bar

    def run(session):
        report = import_auth_db(session, backend(), path, merge, dry_run, progress_bar("Importing"))
        if dry_run:
            session.rollback()
        return report

    report = lib.run_in_transaction(run)
    _emit_import_report(path, report, dry_run)


@command(config, "status", "Show the status of the Config DB", audited=False)
def status():
    """vmdkops_admin config status"""
    from ..db import modes as lib

    emit_message(lib.status_lines())
