"""Where things live on disk. Every location derives from one state root:
``$VMDKOPS_HOME``, or ``/var/lib/vmdkops`` when it is not set, so a test or a
demo can run a whole installation inside a temporary directory.

    $VMDKOPS_HOME/
        auth-db              the config DB: a SQLite file (SingleNode) or a
                             symlink to one on a datastore (MultiNode)
        auth-db.url          a shared database URL (MultiNode on PostgreSQL)
        inventory.json       the local backend's datastores and VMs
        datastores/          where the local backend's default datastore lives
        log_config.json      logging configuration of the service
        log/vmdk_ops.log     the service's log (and the CLI's internal errors)
        run/                 pid and status files of running services
"""

import os
from dataclasses import dataclass

DEFAULT_HOME = "/var/lib/vmdkops"

# Name of the shared config DB file inside a datastore's dockvols folder.
SHARED_DB_NAME = "vmdkops_config.db"
DOCKVOLS = "dockvols"


@dataclass(frozen=True)
class Layout:
    root: str

    @property
    def config_db(self):
        return os.path.join(self.root, "auth-db")

    @property
    def config_db_url(self):
        return os.path.join(self.root, "auth-db.url")

    @property
    def inventory(self):
        return os.path.join(self.root, "inventory.json")

    @property
    def datastores(self):
        return os.path.join(self.root, "datastores")

    @property
    def log_config(self):
        return os.path.join(self.root, "log_config.json")

    @property
    def log_file(self):
        return os.path.join(self.root, "log", "vmdk_ops.log")

    @property
    def run(self):
        return os.path.join(self.root, "run")

    @property
    def service_pid(self):
        return os.path.join(self.run, "vmdk-opsd.pid")

    @property
    def service_state(self):
        return os.path.join(self.run, "vmdk-opsd.json")


def layout():
    """The layout for the current environment (read at each call, so a test
    may point ``VMDKOPS_HOME`` elsewhere between commands)."""
    return Layout(os.path.abspath(os.environ.get("VMDKOPS_HOME") or DEFAULT_HOME))


def shared_db_path(datastore_path):
    return os.path.join(datastore_path, DOCKVOLS, SHARED_DB_NAME)
