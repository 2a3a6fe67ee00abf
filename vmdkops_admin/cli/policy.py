"""``vmdkops_admin policy``: storage policies and the volumes that use them."""

import click

from .options import backend, command, group, output_format_option, with_db
from .render import Column, emit_message, emit_records
from .types import name_option


def _active(count):
    from ..admin.policies import active_text

    return active_text(count)


POLICY_COLUMNS = (Column("Policy Name", "name"), Column("Policy Content", "content"),
                  Column("Active", "volumes", _active), Column("Kind", "kind"),
                  Column("Applies To", "applies"))


policy = group("policy", "Configure and display storage policy information")
policy_option = name_option("The name of the policy")
content_option = click.option("--content", required=True, help="The VSAN policy string")


@command(policy, "create", "Create a storage policy")
@policy_option
@content_option
def create(name, content):
    """vmdkops_admin policy create --name=some-policy --content='(("proportionalCapacity" i50))'"""
    from ..admin import policies as lib

    emit_message(with_db(lib.create)(backend(), name, content))


@command(policy, "rm", "Remove a storage policy")
@policy_option
def rm(name):
    """vmdkops_admin policy rm --name=some-policy"""
    from ..admin import policies as lib

    emit_message(with_db(lib.remove)(backend(), name))


@command(policy, "ls", "List storage policies and volumes using those policies",
         audited=False)
@output_format_option
def ls(output_format):
    """vmdkops_admin policy ls"""
    from ..admin import policies as lib
    from ..db import modes

    if modes.detect().mode is modes.Mode.NOT_CONFIGURED:
        emit_records(POLICY_COLUMNS, [])
        return
    emit_records(POLICY_COLUMNS, with_db(lib.list_policies)(backend()))


@command(policy, "update", "Update the definition of a storage policy and all VSAN objects "
         "using that policy")
@policy_option
@content_option
def update(name, content):
    """vmdkops_admin policy update --name=some-policy --content='(("hostFailuresToTolerate" i1))'"""
    from ..admin import policies as lib
    from .render import progress_bar

    emit_message(with_db(lib.update)(backend(), name, content, progress_bar("Updating volumes")))
