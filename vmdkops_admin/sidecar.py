"""A volume's metadata: one JSON document in a side-car file next to its
descriptor (``<vol>.vmfd``). It is the truth that travels with the datastore;
the DB's volume index is rebuilt from it. Keys are the original's (spec
esx-service §9): status, created, created-by, attachedVMUuid, attachedVMName,
attachedVMDevice, volOpts."""

import fcntl
import json
import os

SUFFIX = ".vmfd"


def path_for(descriptor):
    return descriptor[:-len(".vmdk")] + SUFFIX


def load(descriptor):
    """The metadata, or None when the side-car is missing or not JSON (the
    original's space-padded documents read as well)."""
    try:
        with open(path_for(descriptor)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def save(descriptor, meta, guard=None):
    """Write atomically. With ``guard=(key, value)`` the write happens only if
    the stored document has no ``key`` or has it equal to ``value``; returns
    whether it wrote."""
    if guard is not None:
        key, value = guard
        current = load(descriptor) or {}
        if key in current and current[key] != value:
            return False
    target = path_for(descriptor)
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        # Locked while written: reconcile removes only temporary files nobody writes.
        fcntl.flock(f, fcntl.LOCK_EX)
        json.dump(meta, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, target)
    return True


def remove(descriptor):
    try:
        os.unlink(path_for(descriptor))
    except FileNotFoundError:
        pass
