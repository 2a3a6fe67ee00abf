"""Names: of volumes, ``volume[@datastore]``, split at the last ``@`` (spec
esx-service §4), of datastores and of vmgroups. A name is validated before
any path is built from it."""

import re
from dataclasses import dataclass
from typing import Optional

from . import errors
from .errors import InvalidArgument

_SNAPSHOT_SUFFIX = re.compile(r"^.*-[0-9]{6}$")
# Files next to a descriptor: a volume with such a name would collide with them.
_RESERVED_SUFFIX = re.compile(r"-(flat|delta|ctk|digest)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 100
# A file name has at most 255 bytes; a volume's longest is <volume>-flat.vmdk.<pid>.tmp.
MAX_NAME_BYTES = 200
# What a disk's descriptor cannot quote: refused in the names of new volumes
# (volumes made before keep working).
_UNQUOTABLE = '"'
# The vmgroup of every VM that is in no other.
DEFAULT_VMGROUP = "_DEFAULT"
DEFAULT_VMGROUP_UUID = "11111111-1111-1111-1111-111111111111"
DEFAULT_VMGROUP_DESCRIPTION = "This is a default vmgroup"
# Seconds a VM's plugin may be silent before another VM of its vmgroup may
# take its volumes over (a vmgroup's default).
DEFAULT_TAKEOVER_AFTER = 30
_VMGROUP_NAME = re.compile(errors.VMGROUP_NAME_PATTERN)


@dataclass(frozen=True)
class VolumeName:
    volume: str
    datastore: Optional[str]

    def full(self, datastore=None):
        return f"{self.volume}@{datastore or self.datastore}"


def parse(full_name):
    """Split and validate a volume name; ``InvalidArgument`` with the original's texts."""
    volume, at, datastore = full_name.rpartition("@")
    if not at:
        volume, datastore = full_name, ""
    validate_volume(volume)
    if len(datastore) > MAX_NAME:
        raise InvalidArgument(f"Datastore name is too long (max len is {MAX_NAME})")
    if _CONTROL.search(datastore):
        raise InvalidArgument("Datastore name contains control characters")
    return VolumeName(volume, datastore or None)


def validate_volume(volume):
    if not volume:
        raise InvalidArgument("Volume name is empty")
    if _SNAPSHOT_SUFFIX.match(volume):
        raise InvalidArgument(
            "Volume names ending with '-NNNNNN' (where N is a digit) are not supported")
    if len(volume) > MAX_NAME:
        raise InvalidArgument(f"Volume name is too long (max len is {MAX_NAME})")
    try:
        encoded = volume.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument("Volume name is not valid Unicode") from None
    if len(encoded) > MAX_NAME_BYTES:
        raise InvalidArgument(f"Volume name is too long (max len is {MAX_NAME_BYTES} bytes in UTF-8)")
    for char in ("/", "\\"):
        if char in volume:
            raise InvalidArgument(f"Volume name contains illegal characters: {char}")
    if _CONTROL.search(volume):
        raise InvalidArgument("Volume name contains illegal characters: control characters")
    if volume in (".", ".."):
        raise InvalidArgument(f"Volume name contains illegal characters: {volume}")
    if _RESERVED_SUFFIX.search(volume):
        raise InvalidArgument(
            "Volume names ending with '-flat', '-delta', '-ctk' or '-digest' are not supported")


def validate_new_volume(volume):
    """The name of a volume about to be made: what ``validate_volume`` asks,
    and nothing its disk's descriptor cannot hold."""
    validate_volume(volume)
    for char in _UNQUOTABLE:
        if char in volume:
            raise InvalidArgument(f"Volume name contains illegal characters: {char}")


def validate_datastore_name(name):
    """A datastore's name on the local backend."""
    if not name or len(name) > MAX_NAME:
        raise InvalidArgument(f"Datastore name '{name}' must have 1 to {MAX_NAME} characters")
    if name.startswith("_") or name in (".", "..") or _CONTROL.search(name) \
            or any(c in name for c in "/\\@"):
        raise InvalidArgument(
            f"Datastore name '{name}' is invalid: it may not start with '_', be '.' or '..', "
            "or contain '/', '\\', '@' or control characters")


def validate_vm_name(name):
    """A VM's name on the local backend."""
    if not name or len(name) > 80 or "," in name or _CONTROL.search(name):
        raise InvalidArgument(
            f"VM name '{name}' is invalid: it needs 1 to 80 characters, without ',' "
            "or control characters")


def match_datastore(name, known_names):
    """The known datastore name that ``name`` matches ignoring case, None if none."""
    matches = [known for known in known_names if known.lower() == name.lower()]
    if name in matches:
        return name
    if len(matches) > 1:
        raise InvalidArgument(
            f"Found multiple datastores with same name (ignoring case difference): {matches}")
    return matches[0] if matches else None


def validate_vmgroup_name(name):
    if not name:
        raise InvalidArgument(errors.TENANT_NAME_EMPTY)
    if not _VMGROUP_NAME.fullmatch(name):
        raise InvalidArgument(errors.TENANT_NAME_INVALID.format(name, errors.VMGROUP_NAME_PATTERN))
    if len(name) > 64:
        raise InvalidArgument(errors.TENANT_NAME_TOO_LONG.format(name))
