"""``vmdkops_admin config``: create, remove, move, upgrade and show the config DB."""

import click

from .options import backend, command, group
from .render import emit_message


def register(cli):
    config = group("config", "Init and manage Config DB to enable quotas and access control", cli)

    @command(config, "init", "Init Config DB to allow quotas and access groups, aka vmgroups")
    @click.option("--datastore", help="Config DB will be placed on a shared datastore")
    @click.option("--local", is_flag=True, help="Allows local (SingleNode) Init")
    @click.option("--db-url", metavar="URL",
                  help="Use a shared database, e.g. postgresql://user:password@host/db "
                       "(MultiNode); the URL is kept in a root-only file")
    @click.option("--force", is_flag=True, help="Force operation, ignore warnings")
    def init(datastore, local, db_url, force):
        from .. import config as lib

        emit_message(lib.init(backend(), local, datastore, db_url, force))

    @command(config, "rm", "Remove Config DB")
    @click.option("--local", is_flag=True, help="Remove only local link or local DB")
    @click.option("--unlink", is_flag=True, help="Remove the local link to shared DB")
    @click.option("--no-backup", is_flag=True, help="Do not create DB backup before removing")
    @click.option("--confirm", is_flag=True, help="Explicitly confirm the operation")
    def rm(local, unlink, no_backup, confirm):
        from .. import config as lib

        emit_message(lib.remove(local, unlink, no_backup, confirm))

    @command(config, "mv", "Relocate Config DB from its current location")
    @click.option("--to", metavar="DATASTORE", help="Where to move the DB to: a datastore.")
    @click.option("--local", is_flag=True,
                  help="Copy a shared DB to this host and use the copy (SingleNode)")
    @click.option("--force", is_flag=True, help="Force operation, ignore warnings")
    def mv(to, local, force):
        from .. import config as lib

        if to is None and not local:
            raise click.UsageError("one of '--to' or '--local' is required")
        emit_message(lib.move(backend(), to, local, force))

    @command(config, "upgrade", "Upgrade the Config DB schema to this version (keeps a backup)")
    def upgrade():
        from .. import config as lib

        emit_message(lib.upgrade())

    @command(config, "status", "Show the status of the Config DB")
    def status():
        from .. import config as lib

        emit_message(lib.status_lines())
