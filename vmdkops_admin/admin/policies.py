"""Storage policies (spec admin-cli §4.2, esx-service §13): kept in the auth
DB, given to a volume at create (``-o vsan-policy-name``) and applied by the
backend; ``update`` applies the new content to every volume that uses it."""

import re

from sqlalchemy import func, select

from ..db.models import Policy, VmGroup, Volume
from ..db.steps import PartlyDone
from ..errors import AlreadyExists, InvalidArgument, NotFound, VmdkopsError
from ..progress import Progress
from ..vsan_rules import parse_vsan

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def get(session, name):
    return session.scalars(select(Policy).where(Policy.name == name)).first()


def create(session, backend, name, content):
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"Policy name {name} is invalid, only [A-Za-z0-9_][A-Za-z0-9_.-]* "
                              "(at most 128 characters) is allowed")
    if get(session, name) is not None:
        raise AlreadyExists("Error: Policy already exists")
    parse_vsan(content)
    session.add(Policy(name=name, content=content))
    session.flush()
    backend.policy_created(name, content)
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
    backend.policy_removed(name)
    return f"Successfully removed policy: {name}"


def list_policies(session, backend):
    """The auth DB's policies and the storage layer's own (vCenter's SPBM
    profiles), with the number of volumes that use each and where it applies."""
    counts = dict(session.execute(select(Volume.policy_id, func.count(Volume.id))
                                  .where(Volume.policy_id.is_not(None))
                                  .group_by(Volume.policy_id)).all())
    kind, applies = backend.policy_scope()
    external = {name: (rules, ours) for name, rules, ours in backend.external_policies()}
    records = []
    for p in session.scalars(select(Policy).order_by(Policy.name)):
        missing = external and p.name not in external
        records.append({"name": p.name, "content": p.content, "volumes": counts.get(p.id, 0),
                        "kind": f"{kind} (missing there)" if missing else kind, "applies": applies})
    ours = {r["name"] for r in records}
    if external:
        used = {}
        for (options,) in session.execute(select(Volume.options).where(Volume.policy_id.is_(None))):
            name = (options or {}).get("vsan-policy-name")
            used[name] = used.get(name, 0) + 1
        for name, (rules, _) in sorted(external.items()):
            if name not in ours:
                records.append({"name": name, "content": rules, "volumes": used.get(name, 0),
                                "kind": f"{kind} (vCenter's)", "applies": applies})
    return records


def active_text(count):
    return f"In use by {count} volumes" if count else "Unused"


def update(session, backend, name, content, progress=None):
    """New content, applied to each volume that uses the policy. When it
    applies to none of them the old content stays. ``progress(done, total)``
    hears of each volume."""
    policy = get(session, name)
    if policy is None:
        raise NotFound(f"Error: Policy {name} does not exist")
    parse_vsan(content)
    if " ".join(policy.content.split()) == " ".join(content.split()):
        raise InvalidArgument("Error: New policy is identical to old policy. Ignoring.")
    backend.policy_updated(name, content)
    users = _users(session, backend, policy)
    failed = []
    steps = Progress(len(users), progress)
    for full_name, descriptor in users:
        steps.advance()
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
    if failed:  # what was applied stays applied
        raise PartlyDone(f"Successfully updated: {len(users) - len(failed)} volumes.\n"
                           f"Failed to update:     {', '.join(failed)} volumes")
    return [f"Successfully updated policy {name}", f"Applied to {len(users)} volumes."]
