"""A volume's metadata: one JSON document in a side-car file next to its
descriptor (``<vol>.vmfd``). It is the truth that travels with the datastore;
the DB's volume index is rebuilt from it. Keys are the original's (spec
esx-service §9): status, created, created-by, attachedVMUuid, attachedVMName,
attachedVMDevice, volOpts."""

import json

from .folder import Tampered

SUFFIX = ".vmfd"
MAX_SIZE = 1024 * 1024


def name_for(volume):
    return volume + SUFFIX


def load(folder, volume):
    """The metadata, or None when the side-car is missing, is not a regular
    file, or is not a JSON object (the original's space-padded documents
    read as well)."""
    try:
        meta = json.loads(folder.read(name_for(volume), MAX_SIZE))
    except (OSError, ValueError, Tampered):
        return None
    return meta if isinstance(meta, dict) else None


def save(folder, volume, meta, guard=None):
    """Write atomically. With ``guard=(key, value)`` the write happens only if
    the stored document has no ``key`` or has it equal to ``value``; returns
    whether it wrote."""
    if guard is not None:
        key, value = guard
        current = load(folder, volume) or {}
        if key in current and current[key] != value:
            return False
    folder.write_whole(name_for(volume), json.dumps(meta, sort_keys=True).encode())
    return True


def remove(folder, volume):
    folder.unlink(name_for(volume), missing_ok=True)
