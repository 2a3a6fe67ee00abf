"""The audit trail: every change made through vmdkops_admin and every volume
operation of the executor, with a UTC time and who did it. Recording is
best effort: it never blocks or fails the operation itself, and a record that
could not be written is logged (with what it would have said)."""

import getpass
import logging
import os
from datetime import datetime, timezone

log = logging.getLogger("vmdkops.audit")


def log_loss(event, exc):
    if not log.handlers and not logging.getLogger().handlers:
        from ..paths import layout

        try:
            os.makedirs(os.path.dirname(layout().log_file), exist_ok=True)
            handler = logging.FileHandler(layout().log_file)
            handler.setFormatter(logging.Formatter("%(asctime)s %(process)d [%(levelname)s] %(message)s"))
            log.addHandler(handler)
        except OSError:
            return
    log.warning("audit record lost (%s): %s", exc, event)


def write(engine, **event):
    """Add one event with ``engine``; never raises."""
    event.setdefault("at", datetime.now(timezone.utc).replace(tzinfo=None))
    try:
        from sqlalchemy.orm import Session

        from .models import AuditEvent

        with Session(engine) as session:
            session.add(AuditEvent(**event))
            session.commit()
    except Exception as exc:  # noqa: BLE001 - the operation must not fail for its audit
        log_loss(event, exc)


def actor():
    return os.environ.get("SUDO_USER") or getpass.getuser()


def admin_event(action, params, error):
    """Record a vmdkops_admin command (when there is a config DB to record in)."""
    from . import modes

    state = modes.detect()
    if state.mode in (modes.Mode.NOT_CONFIGURED, modes.Mode.BROKEN_LINK):
        return
    event = {"source": "admin", "actor": actor(), "action": action,
             "outcome": "failed" if error else "ok", "error": error,
             "vmgroup": params.get("vmgroup") or (params.get("name") if action.startswith("vmgroup")
                                                  else None),
             "target": next((str(params[k]) for k in ("full_name", "vm_list", "datastore", "name")
                             if params.get(k)), None)}
    try:
        engine = modes.connect(state)
    except Exception as exc:  # noqa: BLE001
        log_loss(event, exc)
        return
    try:
        write(engine, **event)
    finally:
        engine.dispose()
