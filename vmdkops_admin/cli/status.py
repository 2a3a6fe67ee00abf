"""``vmdkops_admin status``: the service and the config DB at a glance."""

import click

from .options import command
from .render import emit_message


@command(None, "status", "Show the status of the vmdk_ops service", audited=False)
@click.option("--fast", is_flag=True, help="Skip some of the data collection (port, version)")
def status(fast):
    """vmdkops_admin status --fast"""
    from .. import service
    from ..db import modes

    emit_message(service.status_lines(fast) + modes.status_lines())
