"""The config DB's modes, how to open it, and ``config status`` (its life
cycle is ``lifecycle``).

NotConfigured: no DB; no access control, everything is allowed and
``_DEFAULT`` is simulated. SingleNode: a SQLite file at the local path.
MultiNode: a DB shared by many hosts, either a SQLite file on a datastore that
the local path links to, or a database URL (PostgreSQL). BrokenLink: the link
or the URL leads to nothing usable; everything is refused until ``config rm``.
"""

import contextlib
import enum
import os
from dataclasses import dataclass
from typing import Optional

from .. import db
from ..errors import INIT_NEEDED, DbAccessError, NotConfigured
from ..paths import layout


class Mode(enum.Enum):
    NOT_CONFIGURED = "NotConfigured (no local DB, no symlink to shared DB)"
    SINGLE_NODE = "SingleNode (local DB exists)"
    MULTI_NODE = "MultiNode (local symlink pointing to shared DB)"
    MULTI_NODE_URL = "MultiNode (shared database URL)"
    BROKEN_LINK = "BrokenLink (Broken link or corrupted DB file)"


@dataclass(frozen=True)
class ConfigState:
    mode: Mode
    local_path: Optional[str] = None
    shared_location: Optional[str] = None
    url: Optional[str] = None

    @property
    def location(self):
        """How messages name the DB."""
        if self.mode is Mode.MULTI_NODE_URL:
            return self.shared_location
        return self.local_path

    def db_info(self):
        return (f"DB_Mode: {self.mode.value}, DB_LocalPath: {self.local_path or 'N/A'}, "
                f"DB_SharedLocation: {self.shared_location or 'N/A'}")


def read_url_file(path):
    with open(path) as f:
        return f.read().strip()


def _is_auth_db(path):
    """A cheap look at a linked file: is it a SQLite DB with a schema revision?"""
    import sqlite3
    from urllib.parse import quote

    if not os.path.isfile(path):
        return False
    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
        try:
            connection.execute("SELECT version_num FROM alembic_version").fetchall()
        finally:
            connection.close()
    except sqlite3.Error:
        return False
    return True


def detect():
    """The current mode, found without creating anything (a missing SQLite
    path must never be opened: that would create an empty file)."""
    paths = layout()
    if os.path.exists(paths.config_db_url):
        url = read_url_file(paths.config_db_url)
        return ConfigState(Mode.MULTI_NODE_URL, paths.config_db_url, db.display_url(url), url)
    local = paths.config_db
    if os.path.islink(local):
        target = os.path.realpath(local)
        if not _is_auth_db(target):
            return ConfigState(Mode.BROKEN_LINK, local)
        return ConfigState(Mode.MULTI_NODE, local, os.readlink(local), db.sqlite_url(target))
    if os.path.isfile(local):
        return ConfigState(Mode.SINGLE_NODE, local, None, db.sqlite_url(local))
    return ConfigState(Mode.NOT_CONFIGURED)


def broken_link_error(state):
    return DbAccessError(f"DB access error at {state.local_path}: {Mode.BROKEN_LINK.value}")


def connect(state):
    """A checked engine for a configured state; ``DbAccessError`` otherwise."""
    if state.mode is Mode.BROKEN_LINK:
        raise broken_link_error(state)
    if state.mode is Mode.NOT_CONFIGURED:
        raise NotConfigured(INIT_NEEDED)
    return db.connect(state.url, state.location)


def run_in_transaction(function, *args, optional=False, **kwargs):
    """``function(session, *args)`` in one transaction of the config DB: it
    commits when the function returns or raises ``PartlyDone``, and rolls
    back when it raises anything else. With ``optional``, a host without a
    config DB gets None for the session."""
    from sqlalchemy.orm import Session

    from .steps import PartlyDone

    state = detect()
    if optional and state.mode is Mode.NOT_CONFIGURED:
        return function(None, *args, **kwargs)
    engine = connect(state)
    try:
        with Session(engine) as session:
            try:
                result = function(session, *args, **kwargs)
            except PartlyDone:
                session.commit()
                raise
            session.commit()
            return result
    finally:
        engine.dispose()


@contextlib.contextmanager
def reader():
    """``query(sql) -> rows`` on the config DB for listings and reports, or
    None without one: plain SQL through a read-only stdlib connection on
    SQLite (no SQLAlchemy import, no write lock), SQLAlchemy's core otherwise."""
    state = detect()
    if state.mode is Mode.NOT_CONFIGURED:
        yield None
        return
    if state.mode is Mode.BROKEN_LINK:
        raise broken_link_error(state)
    if state.url.startswith("sqlite:"):
        connection = db.sqlite_reader(state.url[len("sqlite:///"):], state.location)
        try:
            yield connection.execute
        finally:
            connection.close()
        return
    from sqlalchemy import text

    engine = connect(state)
    try:
        with engine.connect() as connection:
            yield lambda sql: connection.execute(text(sql))
    finally:
        engine.dispose()


def status_lines(state=None):
    state = state or detect()
    return [f"DB_Mode: {state.mode.value}",
            f"DB_LocalPath: {state.local_path or 'N/A'}",
            f"DB_SharedLocation: {state.shared_location or 'N/A'}"]
