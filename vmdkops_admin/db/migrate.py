"""Schema migrations, run from code with Alembic (imported only here, so only
``config init`` and ``config upgrade`` pay for it)."""

import os

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from .. import migrations


def _config(connection=None):
    config = Config()
    config.set_main_option("script_location", os.path.dirname(migrations.__file__))
    config.attributes["connection"] = connection
    return config


def script_revisions():
    """Revision ids from base to head, as the migration scripts define them."""
    script = ScriptDirectory.from_config(_config())
    return tuple(reversed([rev.revision for rev in script.walk_revisions()]))


def upgrade(engine, revision="head"):
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)
