"""Crash-safe steps. What a request changes in the auth DB is committed one
named step at a time, between the changes it makes to disks; a crash between
two steps is finished or undone by reconcile. With ``VMDKOPS_CRASH_AT=<step>``
the process is killed right after that step (the crash tests)."""

import contextlib

from ..errors import VmdkopsError
from ..faults import crashpoint


@contextlib.contextmanager
def step(session, name=None):
    """The block's changes to ``session`` committed when it ends, rolled back
    when it raises. ``session`` None (no auth DB) gives None and no transaction."""
    if session is not None:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
    else:
        yield None
    crashpoint(name)


class PartlyDone(VmdkopsError):
    """An operation that made some of its changes, which stay made: the
    caller's transaction commits before the error is shown."""
