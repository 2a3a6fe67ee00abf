"""The config DB's life cycle: ``config init``, ``rm``, ``mv`` and ``upgrade``
(the modes and how the DB is opened are ``modes``)."""

import os
import shutil
import time

from .. import db
from ..errors import INIT_NEEDED, DbAccessError, InvalidArgument, NotConfigured, NotFound, VmdkopsError
from ..names import DEFAULT_VMGROUP, DEFAULT_VMGROUP_DESCRIPTION, DEFAULT_VMGROUP_UUID
from ..paths import layout
from .modes import Mode, broken_link_error, detect


# -- config init --------------------------------------------------------------

def init(backend, local=False, datastore=None, db_url=None, force=False):
    """Create (or join) the config DB; returns the lines to print."""
    paths = layout()
    if datastore is not None and backend.datastore_by_name(datastore) is None:
        raise NotFound(f"No such datastore: {datastore}")
    chosen = [flag for flag, given in (("--local", local), ("--datastore", datastore is not None),
                                       ("--db-url", db_url is not None)) if given]
    if len(chosen) > 1:
        raise InvalidArgument("Error: only one of '--datastore', '--local' or '--db-url' can be set")
    if not chosen:
        raise InvalidArgument("Error: one of '--datastore', '--local' or '--db-url' have to be set")

    state = detect()
    if state.mode is Mode.BROKEN_LINK:
        raise broken_link_error(state)
    if state.mode is not Mode.NOT_CONFIGURED:
        raise VmdkopsError("Config DB is already initialized. Use 'rm --local' or 'rm --unlink' "
                           f"to reset. Additional information: {state.db_info()}")

    os.makedirs(paths.root, exist_ok=True)
    if db_url is not None:
        return _init_url(paths, db_url)
    if local:
        return [f"Creating new DB at {paths.config_db}"] if _create_sqlite(paths.config_db) else []

    target = _shared_db_file(backend, backend.datastore_by_name(datastore))
    found = [(ds.name, backend.shared_db_file(ds)) for ds in backend.datastores()
             if ds.name != datastore and backend.shared_db_file(ds)
             and os.path.exists(backend.shared_db_file(ds))]
    if found and not force:
        where = ", ".join(f"{name} ({path})" for name, path in found)
        raise VmdkopsError("Found Config DB on other datastores. Add '--force' flag to force the "
                           f"request execution. Additional information: {where}")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    lines = [f"Creating new DB at {target}"] if _create_sqlite(target) else []
    _link(target, paths.config_db)
    lines.append(f"Creating a symlink to {target} at {paths.config_db}")
    return lines


def _shared_db_file(backend, datastore):
    path = backend.shared_db_file(datastore)
    if path is None:
        raise VmdkopsError(
            f"Datastore {datastore.name} is not a directory of this host on the {backend.name} "
            "backend, so it cannot hold a shared auth DB file: share a PostgreSQL database instead "
            "('config init --db-url postgresql://user:password@host/database')")
    return path


def _create_sqlite(path):
    """Create a SQLite DB at ``path`` unless one is there (joining a shared
    DB); True when it was created. A failed create leaves no file behind."""
    if os.path.exists(path):
        db.connect(db.sqlite_url(path), path).dispose()
        return False
    try:
        _create_schema(db.sqlite_url(path))
    except BaseException as exc:
        for leftover in (path, path + "-journal"):
            if os.path.exists(leftover):
                os.unlink(leftover)
        if isinstance(exc, VmdkopsError):
            raise
        raise VmdkopsError(f"Init failed: {exc}") from exc
    os.chmod(path, 0o600)
    return True


def _create_schema(url):
    """Bring an empty DB to the head revision and add ``_DEFAULT`` with full
    access to ``_ALL_DS`` and ``_VM_DS``."""
    from sqlalchemy.orm import Session

    from ..backends import ALL_DS, SPECIAL_DATASTORE_URLS, VM_DS
    from .migrate import upgrade
    from .models import Privilege, VmGroup

    engine = db.create_engine(url)
    try:
        upgrade(engine)
        with Session(engine) as session, session.begin():
            group = VmGroup(uuid=DEFAULT_VMGROUP_UUID, name=DEFAULT_VMGROUP,
                            description=DEFAULT_VMGROUP_DESCRIPTION,
                            default_datastore_url=SPECIAL_DATASTORE_URLS[VM_DS])
            group.privileges = [
                Privilege(datastore_url=SPECIAL_DATASTORE_URLS[name], allow_create=True)
                for name in (ALL_DS, VM_DS)]
            session.add(group)
    finally:
        engine.dispose()


def _init_url(paths, url):
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    shown = db.display_url(url)
    try:
        engine = db.create_engine(url)
    except Exception as exc:
        raise InvalidArgument(f"Invalid database URL ({exc}); expected a URL such as "
                              "postgresql://user:password@host:5432/database") from None
    try:
        with engine.connect() as connection:
            existing = inspect(connection).has_table("alembic_version")
            if existing:
                db.check_revision(db.read_revision(connection, shown), shown)
    except SQLAlchemyError as exc:
        raise DbAccessError(f"DB connection error at {shown}: {getattr(exc, 'orig', exc)}") from None
    finally:
        engine.dispose()
    lines = []
    if not existing:
        _create_schema(url)
        lines.append(f"Creating new DB at {shown}")
    tmp = paths.config_db_url + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(url + "\n")
    os.replace(tmp, paths.config_db_url)
    lines.append(f"Using shared database {shown}")
    return lines


def _link(target, link):
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


# -- config rm ------------------------------------------------------------------

RM_NEEDS_FLAG = """
        DB removal is irreversible operation. Please use '--local' flag for removing DB in SingleNode mode,
        and use '--unlink' to unlink from DB in MultiNode mode.
        Note that '--unlink' will not remove a shared DB, but simply configure the current host to stop using it.
        For removing shared DB, run 'vmdkops_admin config rm --unlink' on hosts using this DB, and then manually
        remove the actual DB file 'vmdkops_config.db' from shared storage (or drop the shared database).
        """
RM_BOTH_FLAGS = """
        Cannot use '--local' and '--unlink' together. Please use '--local' flag for removing DB in SingleNode mode,
        and use '--unlink' to unlink from DB in MultiNode mode.
        """


def remove(local=False, unlink=False, no_backup=False, confirm=False):
    """Forget the config DB (``config rm``); returns the lines to print."""
    if not local and not unlink:
        raise InvalidArgument(RM_NEEDS_FLAG)
    if local and unlink:
        raise InvalidArgument(RM_BOTH_FLAGS)
    if not confirm:
        raise InvalidArgument("Warning: For extra safety, removal operation requires '--confirm' flag.")

    paths = layout()
    state = detect()
    if state.mode is Mode.NOT_CONFIGURED:
        return []
    if state.mode is Mode.BROKEN_LINK:
        os.unlink(paths.config_db)
        return [f'Received error - removing configuration anyways. Err: "{broken_link_error(state)}"']
    if state.mode in (Mode.MULTI_NODE, Mode.MULTI_NODE_URL):
        if local:
            raise InvalidArgument(
                "'rm --local' is not supported when Config DB is in MultiNode mode. "
                "Use 'rm --unlink' to remove the local link to shared DB.")
        os.unlink(state.local_path)
        return [f"Removed link {state.local_path}"]
    if unlink:
        raise InvalidArgument(
            "'rm --unlink' is not supported when Config DB is in SingleNode mode. "
            "Use 'rm --local' to remove local DB configuration.")
    if no_backup:
        os.unlink(paths.config_db)
        return [f"Removed {paths.config_db}"]
    backup = f"{paths.config_db}.bak_{time.asctime().replace(' ', '_')}"
    os.replace(paths.config_db, backup)
    return [f"Moved {paths.config_db} to backup file {backup}"]


# -- config mv --------------------------------------------------------------------

def move(backend, to=None, local=False, force=False):
    """Move the config DB file between this host and a datastore (``config mv``)."""
    if to is not None and local:
        raise InvalidArgument("Error: only one of '--to' or '--local' can be set")
    target_name = to if to is not None else "local"
    if not force:
        raise InvalidArgument(
            f"Config DB move to {target_name} requires '--force' flag to execute the request.")
    paths = layout()
    state = detect()
    if state.mode is Mode.BROKEN_LINK:
        raise broken_link_error(state)
    if state.mode in (Mode.NOT_CONFIGURED, Mode.MULTI_NODE_URL):
        raise InvalidArgument(f"Nothing to move - Mode={state.mode.value}.")
    # Refuse to move a DB that is older or newer than this code.
    db.connect(state.url, state.location).dispose()

    if local:
        if state.mode is Mode.SINGLE_NODE:
            raise InvalidArgument(f"Config DB is already local at {paths.config_db}")
        shared = os.path.realpath(paths.config_db)
        tmp = paths.config_db + ".tmp"
        shutil.copy2(shared, tmp)
        os.replace(tmp, paths.config_db)
        return [f"Copied {shared} to {paths.config_db}",
                f"{shared} is left in place for the other hosts that use it"]

    datastore = backend.datastore_by_name(to)
    if datastore is None:
        raise NotFound(f"No such datastore: {to}")
    target = _shared_db_file(backend, datastore)
    if state.mode is Mode.MULTI_NODE:
        raise InvalidArgument(
            f"Config DB is shared at {os.path.realpath(paths.config_db)}; other hosts link to it. "
            "Move it to this host with 'config mv --local --force' first.")
    if os.path.exists(target):
        raise InvalidArgument(f"{target} already exists; remove it or use 'config init --datastore {to}' to join it")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(paths.config_db, target)
    _link(target, paths.config_db)
    return [f"Moved {state.local_path} to {target}",
            f"Creating a symlink to {target} at {paths.config_db}"]


# -- config upgrade ---------------------------------------------------------------

def upgrade():
    """Bring the config DB to this code's schema, keeping a backup of a SQLite file."""
    from .migrate import upgrade as run_upgrade

    state = detect()
    if state.mode is Mode.NOT_CONFIGURED:
        raise NotConfigured(INIT_NEEDED)
    if state.mode is Mode.BROKEN_LINK:
        raise broken_link_error(state)
    engine = db.create_engine(state.url)
    try:
        with engine.connect() as connection:
            before = db.read_revision(connection, state.location)
        if before == db.HEAD_REVISION:
            return [f"Config DB at {state.location} is up to date (revision {before})"]
        if before not in db.REVISIONS:
            db.check_revision(before, state.location)
        lines = []
        if state.url.startswith("sqlite:"):
            path = os.path.realpath(state.local_path)
            backup = f"{path}.bak_rev{before}_{time.strftime('%Y%m%dT%H%M%S')}"
            shutil.copy2(path, backup)
            lines.append(f"Saved a backup of {path} at {backup}")
        run_upgrade(engine)
    finally:
        engine.dispose()
    lines.append(f"Upgraded Config DB at {state.location} from revision {before} to {db.HEAD_REVISION}")
    return lines
