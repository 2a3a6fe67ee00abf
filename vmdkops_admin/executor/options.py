"""A create's ``-o`` options (spec esx-service §6): their defaults, the
checks in the original's order with its messages, and what makes two
creates of one volume the same."""

from dataclasses import dataclass
from typing import Optional

from ..errors import InvalidArgument
from ..names import VolumeName, parse
from ..sizes import to_mb

DEFAULTS = (("size", "100mb"), ("vsan-policy-name", "[VSAN default]"), ("diskformat", "thin"),
            ("attach-as", "independent_persistent"), ("access", "read-write"),
            ("fstype", "ext4"), ("clone-from", "None"))
VALID_KEYS = tuple(key for key, _ in DEFAULTS)
DEFAULT_SIZE = dict(DEFAULTS)["size"]
DISK_FORMATS = ["zeroedthick", "thin", "eagerzeroedthick"]
ATTACH_AS = ["independent_persistent", "persistent"]
ACCESS = ["read-write", "read-only"]
MAX_DISK_MB = 62 * 1024 * 1024  # vSphere's largest virtual disk
# What makes two creates of one volume "the same": these options, defaults filled in.
COMPARED = ("size", "diskformat", "attach-as", "access", "fstype", "vsan-policy-name", "clone-from")


@dataclass(frozen=True)
class CreateOptions:
    """A create's options, checked once (``check_options``): ``given`` as the
    guest gave them, as strings, ``diskformat`` filled in (what the side-car
    keeps); the size in MB (the default's for a clone, which takes its
    source's); the clone's source, parsed."""
    given: dict
    size_mb: int
    clone_from: Optional[VolumeName]

    @property
    def policy(self):
        return self.given.get("vsan-policy-name")

    @property
    def diskformat(self):
        return self.given["diskformat"]

    def comparable(self):
        return comparable(self.given)


def check_options(opts, policies_supported=False):
    """The ``CreateOptions`` of a create's options, checked in the original's
    order with its messages."""
    opts = {str(k): str(v) for k, v in (opts or {}).items()}
    bad = [key for key in opts if key not in VALID_KEYS]
    if bad:
        raise InvalidArgument(f"Invalid options: {bad} \nValid options and defaults: {list(DEFAULTS)}")
    clone = "clone-from" in opts
    mb = to_mb(opts.get("size", DEFAULT_SIZE))
    if "size" in opts:
        if clone:
            raise InvalidArgument("Cannot define the size for a clone")
        if mb is None:
            raise InvalidArgument("Invalid format for size. \nValid sizes must be of form X[mMgGtT]b "
                                  "where X is an integer. Default = 100mb")
        if mb > MAX_DISK_MB:
            raise InvalidArgument(f"Invalid volume size specified: {opts['size']} is more than the "
                                  "largest disk, 62tb")
    if "vsan-policy-name" in opts and not policies_supported:
        raise InvalidArgument("Cannot use a VSAN policy on a non-VSAN datastore")
    if opts.get("diskformat", "thin") not in DISK_FORMATS:
        raise InvalidArgument(f"Disk Allocation Format '{opts['diskformat']}' is not supported. "
                              f"Valid options are: {DISK_FORMATS}.")
    if opts.get("attach-as", ATTACH_AS[0]) not in ATTACH_AS:
        raise InvalidArgument(f"Attach type '{opts['attach-as']}' is not supported. "
                              f"Valid options are: {ATTACH_AS}")
    if opts.get("access", ACCESS[0]) not in ACCESS:
        raise InvalidArgument(f"Access type '{opts['access']}' is not supported. "
                              f"Valid options are: {ACCESS}")
    if clone and "fstype" in opts:
        raise InvalidArgument("Cannot define the filesystem type for a clone")
    opts.setdefault("diskformat", "thin")
    return CreateOptions(opts, mb, parse(opts["clone-from"]) if clone else None)


def comparable(opts):
    """What makes two creates of one volume the same, of options as a guest
    gives them or as a side-car keeps them (a size that does not parse is
    compared as written)."""
    mb = to_mb(opts.get("size", DEFAULT_SIZE))
    filled = dict(DEFAULTS)
    filled.update(opts)
    filled["size"] = filled["size"] if mb is None else str(mb)
    return {key: filled[key] for key in COMPARED}
