"""Sizes as users type them and as listings print them. Sizes are stored as
whole MB; ``None`` means unlimited and prints as ``Unset``."""

import re

from .errors import OPT_VOLUME_SIZE_INVALID, InvalidArgument

UNITS_MB = {"MB": 1, "GB": 1024, "TB": 1024 * 1024}
_SIZE = re.compile(r"^([0-9]+)(MB|GB|TB)$", re.IGNORECASE)
# Values that clear a limit back to unlimited.
UNLIMITED_WORDS = ("unset", "0")
# The auth DB keeps sizes in 32-bit integers (PostgreSQL's INTEGER): about 2 PB.
MAX_QUOTA_MB = 2**31 - 1


def to_mb(text):
    """MB of a size such as ``500MB``, ``2gb`` or ``1TB``; None when ``text`` is not one."""
    match = _SIZE.match(text)
    return int(match.group(1)) * UNITS_MB[match.group(2).upper()] if match else None


def parse_quota_mb(text):
    """Parse a quota size such as ``500MB``, ``2gb`` or ``1TB`` into MB.

    ``unset``, ``0`` and any zero size mean "no limit" and give ``None``. Anything
    else (``1.5GB``, ``100``, ``500M``, ``-5GB``) is refused instead of being
    silently ignored as the original did.
    """
    value = text.strip()
    if value.lower() in UNLIMITED_WORDS:
        return None
    mb = to_mb(value)
    if mb is None:
        raise InvalidArgument(
            f"{OPT_VOLUME_SIZE_INVALID} '{text}' is not a whole number followed by MB, GB or TB "
            "(for example 500MB or 2GB); use 'unset' for no limit.")
    if mb > MAX_QUOTA_MB:
        raise InvalidArgument(f"{OPT_VOLUME_SIZE_INVALID} '{text}' is more than the largest size a "
                              f"limit can have, {format_quota_mb(MAX_QUOTA_MB)}.")
    return mb or None


def format_quota_mb(mb):
    """``Unset`` for no limit, else binary units with two decimals (``1.00GB``)."""
    if mb is None:
        return "Unset"
    size = mb * 1024 * 1024
    for unit, scale in (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.2f}{unit}"
    return f"{size}B"


def human_size(size):
    """A size in bytes as DiskLib showed it, truncated: bytes, KB, MB, then GB (never TB)."""
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size // scale}{unit}"
    return str(size)
