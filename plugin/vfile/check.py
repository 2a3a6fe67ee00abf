"""``vfile --check [--repair]``: what the shared volumes' state in etcd, the
file server services and the base volumes disagree on, with a remedy for
each; ``--repair`` does what is safe (nothing that holds data is deleted).
Read-only without ``--repair``. Exit status 0 when all agree (or all was
repaired), 1 when something is left, 2 when etcd or Docker cannot be asked."""

import secrets
import sys

from ..docker_api import DockerError, DockerUnavailable
from .etcd import EtcdError
from .fileserver import BASE_PREFIX, VOLUME_LABEL
from .pki import NoCertificates, SwarmLocked
from .state import CREATING, MOUNTED, STOP, USER


def findings(node):
    """(volume, problem, remedy, repair or None) of everything that disagrees.
    Metadata is deleted only on a whole view: the internal driver listed its
    volumes without a warning, and the volume's base volume, if it were
    there, would be in the vmgroup this node sees."""
    store, servers = node.store, node.servers
    states, used = store.states(), store.mounted()
    served = set(servers.volumes_served())
    listing = node.docker.get("/volumes")
    whole = not listing.get("Warnings")
    listed = [v["Name"] for v in listing.get("Volumes") or []]
    bases = {name[len(BASE_PREFIX):].split("@")[0] for name in listed if name.startswith(BASE_PREFIX)}
    found = []
    if not whole:
        found.append(("-", f"the volumes' listing is not whole ({'; '.join(listing['Warnings'])})",
                      "nothing that deletes metadata is repaired until it is", None))
    for name in sorted(servers.volumes_with_secrets() - served):
        found.append((name, "a password secret is left of a file server that is gone",
                      f"remove it (--repair): docker secret rm $(docker secret ls -q -f "
                      f"label={VOLUME_LABEL}={name})", lambda name=name: servers.remove_secrets(name)))
    for name in sorted(served - set(states)):
        found.append((name, "a file server runs for a volume that is gone",
                      f"stop it: docker service rm vFileServer{name}",
                      lambda name=name: servers.stop(name, node.timeout)))
    for name in sorted(bases - set(states)):
        found.append((name, f"a base volume {BASE_PREFIX}{name} without metadata",
                      f"make it a shared volume again (--repair), or remove it: docker volume rm "
                      f"{BASE_PREFIX}{name}", lambda name=name: _adopt(store, servers, name)))
    here = _vmgroup_here(servers, listed)
    for name in sorted(set(states) - bases):
        if states[name] == CREATING:
            continue
        snapshot = store.snapshot(name)
        vmgroup = snapshot.info.get("vmgroup") if snapshot else None
        if vmgroup is None or vmgroup != here:
            found.append((name, f"its base volume is not visible from this node (it is in vmgroup "
                                f"{vmgroup or 'unknown'}; this node sees {here or 'no vmgroup'})",
                          "check from a node of that vmgroup, or docker volume rm it", None))
            continue
        found.append((name, "metadata without a base volume (its data is gone)",
                      "remove the metadata (--repair), or docker volume rm it",
                      None if not whole or name in used else lambda name=name: store.delete(name)))
    for name, state in sorted(states.items()):
        if state == MOUNTED and name not in used and name in bases:
            found.append((name, "a file server runs that no node uses", "stop it (--repair)",
                          lambda name=name: store.increment(STOP + name)))
    return found


def _vmgroup_here(servers, listed, tries=5):
    """The vmgroup this node's internal driver acts in, as the status of one
    of its volumes tells (base volumes first); None when none tells."""
    for name in sorted(listed, key=lambda n: not n.startswith(BASE_PREFIX))[:tries]:
        vmgroup = servers.base_status(None, name).get("vmgroup")
        if vmgroup:
            return vmgroup
    return None


def _adopt(store, servers, name):
    info = {"username": USER, "password": secrets.token_urlsafe(18), "opts": {}}
    vmgroup = servers.base_status(name).get("vmgroup")
    store.adopt(name, dict(info, vmgroup=vmgroup) if vmgroup else info)


def run(node, repair):
    try:
        node.cluster.secure()
        found = findings(node)
    except (EtcdError, DockerError, DockerUnavailable, SwarmLocked, NoCertificates) as exc:
        print(f"vfile: cannot check: {exc}", file=sys.stderr)
        return 2
    if not found:
        print("etcd, the file servers and the base volumes agree.")
        return 0
    left = 0
    rows = [("Volume", "Problem", "Remedy")]
    for name, problem, remedy, fix in found:
        if repair and fix is not None:
            try:
                fix()
                remedy = "repaired"
            except (EtcdError, DockerError, DockerUnavailable, OSError) as exc:
                remedy = f"repair failed: {exc}"
                left += 1
        else:
            left += 1
        rows.append((name, problem, remedy))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for i, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if i == 0:
            print("  ".join("-" * width for width in widths))
    return 1 if left else 0
