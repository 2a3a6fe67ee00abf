"""``vmdkops_admin report``: usage against quotas, its history, and the audit
trail; made for cron (no prompts, data on stdout or in a file written
atomically, exit code 4 when a quota passes a threshold)."""

import os
import sys

import click

from .options import FORMATS, backend, command, group, output_format_option, with_db
from .render import Column, emit_records, format_records
from .render import output_format as chosen_format

EXIT_THRESHOLD = 4


def _size(mb):
    from ..sizes import format_quota_mb

    return format_quota_mb(mb)


def _optional_size(mb):
    return "N/A" if mb is None else _size(mb)


USAGE_COLUMNS = (
    Column("VMGroup", "vmgroup"), Column("Datastore", "datastore"), Column("Volumes", "volumes"),
    Column("Attached", "attached"), Column("Provisioned", "provisioned_mb", _size),
    Column("Allocated", "allocated_mb", _optional_size),
    Column("Max_volume_size", "max_volume_size", _size), Column("Total_size", "total_size", _size),
    Column("Used", "used_pct", lambda pct: "Unset" if pct is None else f"{pct:.1f}%"))
HISTORY_COLUMNS = (
    Column("VMGroup", "vmgroup"), Column("Datastore", "datastore"), Column("Snapshots", "snapshots"),
    Column("First", "first"), Column("Last", "last"),
    Column("First_provisioned", "first_provisioned_mb", _size),
    Column("Last_provisioned", "last_provisioned_mb", _size),
    Column("Change", "change_mb", lambda mb: f"{mb:+d}MB"),
    Column("Change_per_day", "change_per_day_mb", lambda mb: "N/A" if mb is None else f"{mb:+.1f}MB"))
AUDIT_COLUMNS = tuple(Column(header, key) for header, key in (
    ("Time", "at"), ("Source", "source"), ("Actor", "actor"), ("Action", "action"),
    ("VMGroup", "vmgroup"), ("VM", "vm"), ("Target", "target"), ("Outcome", "outcome"),
    ("Detail", "detail"), ("Error", "error")))


def _duration(_ctx, _param, value):
    from ..admin.reports import parse_duration
    from ..errors import VmdkopsError

    try:
        return parse_duration(value) if value else None
    except VmdkopsError as exc:
        raise click.BadParameter(exc.message) from None


def write_atomically(path, text):
    """Write a whole file or nothing: a collector never reads half of it."""
    from ..errors import VmdkopsError

    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise VmdkopsError(f"Cannot write {path}: {exc.strerror}") from None


report = group("report", "Reports for cron and monitoring: usage, history and audit")


@command(report, "usage", "Volumes, space and quota use per vmgroup and datastore", audited=False)
@click.option("--vmgroup", help="Only this vmgroup")
@click.option("--datastore", help="Only this datastore")
@click.option("--output-format", type=click.Choice(FORMATS + ("prometheus",), case_sensitive=False),
              default=None, help="table (default), json, csv, xml or prometheus (for "
                                 "node_exporter's textfile collector)")
@click.option("--output", "output_file", metavar="FILE",
              help="Write to FILE (atomically: a new file replaces the old one) instead of stdout")
@click.option("--threshold", type=click.FloatRange(0, 1000), metavar="PCT",
              help="When a quota is PCT% used or more: list those rows on stderr and exit 4")
@click.option("--record", is_flag=True, help="Also keep this report as a snapshot for 'report history'")
@click.option("--keep", callback=_duration, metavar="DURATION",
              help="With --record: drop snapshots older than this (e.g. 90d)")
def usage(vmgroup, datastore, output_format, output_file, threshold, record, keep):
    """vmdkops_admin report usage --threshold 90"""
    from ..admin import reports as lib
    from ..db import modes

    with modes.reader() as query:
        if query is None:
            from ..errors import INIT_NEEDED, NotConfigured

            raise NotConfigured(INIT_NEEDED)
        records = lib.usage(query, backend(), vmgroup, datastore)
    if record:
        modes.run_in_transaction(lib.record, records, keep)
    fmt = (output_format or chosen_format()).lower()
    text = (lib.prometheus(records) if fmt == "prometheus"
            else format_records(USAGE_COLUMNS, records, fmt))
    if output_file:
        write_atomically(output_file, text)
    else:
        click.echo(text, nl=False)
    if threshold is not None:
        hot = lib.over(records, threshold)
        for r in hot:
            click.echo(f"vmdkops: vmgroup {r['vmgroup']} uses {r['used_pct']:.1f}% of its "
                       f"{_size(r['total_size'])} quota on datastore {r['datastore']} "
                       f"(threshold {threshold:g}%)", err=True)
        if hot:
            sys.exit(EXIT_THRESHOLD)


@command(report, "history", "Growth of each vmgroup's use of each datastore, from the "
         "snapshots 'report usage --record' kept", audited=False)
@click.option("--since", callback=_duration, metavar="DURATION", help="Only snapshots this recent (e.g. 30d)")
@click.option("--vmgroup", help="Only this vmgroup")
@output_format_option
def history(since, vmgroup, output_format):
    """vmdkops_admin report history --since 30d --vmgroup=vg1"""
    from ..admin import reports as lib

    emit_records(HISTORY_COLUMNS, with_db(lib.history)(since, vmgroup))


@command(report, "audit", "Changes made with vmdkops_admin and operations of the executor",
         audited=False)
@click.option("--since", callback=_duration, metavar="DURATION", help="Only events this recent (e.g. 7d)")
@click.option("--vmgroup", help="Only events of this vmgroup")
@click.option("--vm", help="Only events of this VM")
@click.option("--failed", is_flag=True, help="Only what failed")
@output_format_option
def audit(since, vmgroup, vm, failed, output_format):
    """vmdkops_admin report audit --since 7d --failed"""
    from ..admin import reports as lib

    emit_records(AUDIT_COLUMNS, with_db(lib.audit_events)(since, vmgroup, vm, failed))
