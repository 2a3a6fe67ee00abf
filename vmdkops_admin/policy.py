"""Storage policies (spec admin-cli §4.2, esx-service §13): kept in the auth
DB, given to a volume at create (``-o vsan-policy-name``) and applied by the
backend; ``update`` applies the new content to every volume that uses it."""

import re

from sqlalchemy import func, select

from .db.models import Policy, Volume, VmGroup
from .errors import AlreadyExists, InvalidArgument, NotFound, VmdkopsError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def get(session, name):
    return session.scalars(select(Policy).where(Policy.name == name)).first()


def create(session, name, content):
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"Policy name {name} is invalid, only [A-Za-z0-9_][A-Za-z0-9_.-]* "
                              "(at most 128 characters) is allowed")
    if get(session, name) is not None:
        raise AlreadyExists("Error: Policy already exists")
    session.add(Policy(name=name, content=content))
    session.flush()
    return f"Successfully created policy: {name}"


def _users(session, backend, policy):
    """(full name, descriptor) of every volume that uses a policy."""
    rows = session.execute(select(Volume.name, Volume.datastore_url, VmGroup.uuid)
                           .join(VmGroup, Volume.vmgroup_id == VmGroup.id)
                           .where(Volume.policy_id == policy.id).order_by(Volume.id)).all()
    users = []
    for name, url, group_uuid in rows:
        ds = backend.datastore_by_url(url)
        users.append((f"{name}@{ds.name if ds else url}",
                      backend.descriptor(ds, group_uuid, name) if ds else None))
    return users


def remove(session, backend, name):
    policy = get(session, name)
    if policy is None:
        raise NotFound(f"Policy {name} does not exist")
    users = _users(session, backend, policy)
    if users:
        raise VmdkopsError(f"Cannot remove. Policy is in use by {users[0][0]}")
    session.delete(policy)
    session.flush()
    return f"Successfully removed policy: {name}"


def list_policies(session):
    counts = dict(session.execute(select(Volume.policy_id, func.count(Volume.id))
                                  .where(Volume.policy_id.is_not(None))
                                  .group_by(Volume.policy_id)).all())
    return [{"name": p.name, "content": p.content, "volumes": counts.get(p.id, 0)}
            for p in session.scalars(select(Policy).order_by(Policy.name))]


def active_text(count):
    return f"In use by {count} volumes" if count else "Unused"


def update(session, backend, name, content):
    """New content, applied to each volume that uses the policy. When it
    applies to none of them the old content stays."""
    policy = get(session, name)
    if policy is None:
        raise NotFound(f"Error: Policy {name} does not exist")
    if " ".join(policy.content.split()) == " ".join(content.split()):
        raise InvalidArgument("Error: New policy is identical to old policy. Ignoring.")
    users = _users(session, backend, policy)
    failed = []
    for full_name, descriptor in users:
        try:
            if descriptor is None:
                raise VmdkopsError("its datastore is gone")
            backend.apply_policy(descriptor, name, content)
        except (OSError, VmdkopsError):
            failed.append(full_name)
    if users and len(failed) == len(users):
        raise VmdkopsError(f"Failed to update policy {name}: it could not be applied to any of "
                           f"its volumes ({', '.join(failed)}); the old policy is kept")
    policy.content = content
    session.flush()
    if failed:
        session.commit()  # what was applied stays applied
        raise VmdkopsError(f"Successfully updated: {len(users) - len(failed)} volumes.\n"
                           f"Failed to update:     {', '.join(failed)} volumes")
    return [f"Successfully updated policy {name}", f"Applied to {len(users)} volumes."]
