"""Opening the auth DB: engines for SQLite files and database URLs, foreign
keys on every SQLite connection, and the schema check that refuses a DB whose
revision is not this code's. The check reads ``alembic_version`` directly, so
commands that only use the DB never import Alembic."""

from ..errors import DbAccessError, SchemaMismatch

# The linear history of ``migrations/versions``; a test keeps it equal to
# Alembic's own view of the scripts.
REVISIONS = ("0001", "0002", "0003", "0004")
HEAD_REVISION = REVISIONS[-1]

UPGRADE_HINT = "Run 'vmdkops_admin config upgrade' to upgrade it"


def sqlite_url(path):
    return f"sqlite:///{path}"


def display_url(url):
    """A database URL with its password hidden, for messages and status."""
    from sqlalchemy.engine import make_url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid database URL>"


def create_engine(url):
    import sqlalchemy

    # A plain postgresql:// URL would pick psycopg2; the driver installed with
    # this package is psycopg 3.
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            url = "postgresql+psycopg://" + url[len(plain):]
    if url.startswith("sqlite:"):
        engine = sqlalchemy.create_engine(url, connect_args={"timeout": 30})
        sqlalchemy.event.listen(engine, "connect", _sqlite_on_connect)
        sqlalchemy.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    if url.startswith("postgresql+psycopg://"):
        return sqlalchemy.create_engine(url, connect_args={"connect_timeout": 10})
    return sqlalchemy.create_engine(url)


def _sqlite_on_connect(dbapi_connection, _record):
    # SQLite ignores foreign keys unless asked on each connection (the original
    # misspelled the pragma, so its FKs were never enforced).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Transactions are begun explicitly (below).
    dbapi_connection.isolation_level = None


def _sqlite_on_begin(connection):
    # IMMEDIATE takes the write lock at the start: a transaction that reads
    # and then writes cannot deadlock with another one (SQLite would fail one
    # of them at once instead of waiting). Readers that must not delay
    # writers ask for DEFERRED.
    mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    connection.exec_driver_sql(f"BEGIN {mode}")


def write_lock(session, key):
    """Serialize the transactions of ``session`` that take the same ``key``
    (a quota reservation): an advisory lock on PostgreSQL; on SQLite every
    writing transaction already holds the database's write lock."""
    import zlib

    from sqlalchemy import text

    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                        {"key": zlib.crc32(key.encode())})


def read_revision(connection, location):
    """The schema revision stored in the DB; ``DbAccessError`` when the DB
    cannot be read or is not an auth DB."""
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        reason = getattr(exc, "orig", None) or exc
        raise DbAccessError(f"DB access error at {location}: {reason}".strip()) from None


def check_revision(revision, location):
    if revision == HEAD_REVISION:
        return
    if revision in REVISIONS:
        raise SchemaMismatch(
            f"Config DB at {location} has schema revision {revision}, this vmdkops_admin "
            f"needs revision {HEAD_REVISION}. {UPGRADE_HINT}.")
    if revision is None:
        raise DbAccessError(f"DB access error at {location}: no schema revision recorded")
    raise SchemaMismatch(
        f"Config DB at {location} has schema revision {revision}, which is newer than "
        f"this vmdkops_admin knows (revision {HEAD_REVISION}). Upgrade vmdkops_admin on this host.")


def connect(url, location):
    """An engine for ``url`` whose schema has been checked; ``location`` names
    the DB in messages."""
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            check_revision(read_revision(connection, location), location)
    except SQLAlchemyError as exc:
        engine.dispose()
        raise DbAccessError(f"DB connection error at {location}: {getattr(exc, 'orig', exc)}") from None
    except Exception:
        engine.dispose()
        raise
    return engine


def sqlite_reader(path, location):
    """A read-only stdlib connection to a SQLite config DB whose schema has
    been checked: for listings that must not pay for importing SQLAlchemy."""
    import sqlite3
    from urllib.parse import quote

    try:
        connection = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=30)
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as exc:
        raise DbAccessError(f"DB access error at {location}: {exc}") from None
    check_revision(revision[0] if revision else None, location)
    return connection
