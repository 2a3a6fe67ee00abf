"""When each VM's plugin last reported to an executor: the liveness that a
takeover of a silent VM's volumes rests on (with a fence; see
``volumes.Volume.attach``). A plugin reports every ``REPORT_INTERVAL``
seconds; an executor writes a VM's report to the auth DB at most once per
``WRITE_EVERY`` seconds, so a guest that reports faster costs the DB
nothing more. Without a config DB the executor keeps the reports in memory."""

import threading
import time
from datetime import datetime, timezone

REPORT_INTERVAL = 5
# Less than the interval: a report that comes a little early is still written.
WRITE_EVERY = 0.8 * REPORT_INTERVAL


def utcnow():
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Reports:
    """An executor's record of its VMs' reports: what it last wrote per VM
    (monotonic), and the reports themselves when there is no DB."""

    def __init__(self):
        self._lock = threading.Lock()
        self._written = {}
        self._memory = {}

    def heard(self, vm, engine_of):
        """A report from ``vm``; unless one was written moments ago, written
        to the DB of the engine ``engine_of()`` gives (kept in memory when
        it gives None)."""
        at = time.monotonic()
        with self._lock:
            if at - self._written.get(vm.uuid, -WRITE_EVERY) < WRITE_EVERY:
                return
            self._written[vm.uuid] = at
        try:
            engine = engine_of()
            if engine is not None:
                write(engine, vm.uuid, vm.name, utcnow())
                return
        except Exception:
            with self._lock:
                self._written.pop(vm.uuid, None)  # the next report tries again
            raise
        with self._lock:
            self._memory[vm.uuid] = utcnow()

    def last(self, session, vm_uuid):
        """When the VM last reported (UTC), None if never."""
        if session is None:
            with self._lock:
                return self._memory.get(vm_uuid)
        return last_report(session, vm_uuid)


def write(engine, vm_uuid, vm_name, at):
    from sqlalchemy import update
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    from ..db.models import VmReport

    for _ in range(2):  # a first report raced by another executor's: update it
        with Session(engine) as session, session.begin():
            changed = session.execute(update(VmReport).where(VmReport.vm_uuid == vm_uuid).values(
                reported=at, vm_name=vm_name)).rowcount
            if changed:
                return
            try:
                with session.begin_nested():
                    session.add(VmReport(vm_uuid=vm_uuid, vm_name=vm_name, reported=at))
                return
            except IntegrityError:
                continue


def last_report(session, vm_uuid):
    from sqlalchemy import select

    from ..db.models import VmReport

    return session.scalar(select(VmReport.reported).where(VmReport.vm_uuid == vm_uuid))


def last_reports(query):
    """VM uuid -> when its plugin last reported (UTC), read with a
    ``db.modes.reader`` query (SQLite gives the time as text)."""
    return {vm_uuid: datetime.fromisoformat(at) if isinstance(at, str) else at
            for vm_uuid, at in query("SELECT vm_uuid, reported FROM vm_reports")}


def age_text(reported, now=None):
    """"12s ago", "3m ago", "never"."""
    if reported is None:
        return "never"
    seconds = max(0, int(((now or utcnow()) - reported).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"
