"""Per-VM credentials: how a guest proves which VM it is over TCP or a unix
socket (over vsock on ESX the hypervisor says who the peer is). A credential
is a random token; only its SHA-256 is kept, in a root-only file (0600, as
every file ``jsonfile`` writes) under the state root, so identity works
whatever mode the config DB is in (even with no DB at all)."""

import hashlib
import hmac
import os
import secrets

from ..jsonfile import locked_json
from ..paths import layout


def _path():
    return os.path.join(layout().root, "credentials.json")


def _digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def issue(vm_uuid, rotate=False):
    """A new credential for a VM (replacing its old one), or None when the VM
    already has one and ``rotate`` is not set (tokens cannot be shown again)."""
    os.makedirs(layout().root, exist_ok=True)
    token = secrets.token_urlsafe(32)
    with locked_json(_path(), dict) as hashes:
        if vm_uuid in hashes.values() and not rotate:
            return None
        for digest in [d for d, uuid in hashes.items() if uuid == vm_uuid]:
            del hashes[digest]
        hashes[_digest(token)] = vm_uuid
    return token


def revoke(vm_uuid):
    with locked_json(_path(), dict) as hashes:
        for digest in [d for d, uuid in hashes.items() if uuid == vm_uuid]:
            del hashes[digest]


def vm_for(token):
    """The uuid of the VM a credential belongs to, or None."""
    import json

    if not isinstance(token, str) or not token:
        return None
    try:
        with open(_path()) as f:
            hashes = json.load(f)
    except (OSError, ValueError):
        return None
    wanted = _digest(token)
    for digest, vm_uuid in hashes.items():
        if hmac.compare_digest(digest, wanted):
            return vm_uuid
    return None
