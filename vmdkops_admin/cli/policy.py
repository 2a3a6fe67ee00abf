"""``vmdkops_admin policy``: storage policies and the volumes that use them."""

import click

from .options import backend, command, group, output_format_option, with_db
from .render import Column, emit_message, emit_records


def _active(count):
    from ..policy import active_text

    return active_text(count)


POLICY_COLUMNS = (Column("Policy Name", "name"), Column("Policy Content", "content"),
                  Column("Active", "volumes", _active), Column("Kind", "kind"),
                  Column("Applies To", "applies"))


def register(cli):
    policy = group("policy", "Configure and display storage policy information", cli)

    @command(policy, "create", "Create a storage policy")
    @click.option("--name", required=True, help="The name of the policy")
    @click.option("--content", required=True, help="The VSAN policy string")
    @with_db
    def create(session, name, content):
        from .. import policy as lib

        emit_message(lib.create(session, backend(), name, content))

    @command(policy, "rm", "Remove a storage policy")
    @click.option("--name", required=True, help="Policy name")
    @with_db
    def rm(session, name):
        from .. import policy as lib

        emit_message(lib.remove(session, backend(), name))

    @command(policy, "ls", "List storage policies and volumes using those policies",
             audited=False)
    @output_format_option
    def ls(output_format):
        from .. import config
        from .. import policy as lib

        if config.detect().mode is config.Mode.NOT_CONFIGURED:
            emit_records(POLICY_COLUMNS, [])
            return
        emit_records(POLICY_COLUMNS, with_db(lib.list_policies)(backend()))

    @command(policy, "update", "Update the definition of a storage policy and all VSAN objects "
             "using that policy")
    @click.option("--name", required=True, help="The name of the policy")
    @click.option("--content", required=True, help="The VSAN policy string")
    @with_db
    def update(session, name, content):
        from .. import policy as lib
        from .render import progress_bar

        emit_message(lib.update(session, backend(), name, content, progress_bar("Updating volumes")))
