"""VMDK disks as plain files: a text descriptor (``monolithicFlat``) and its
raw extent ``<vol>-flat.vmdk``, as ESX lays out a flat disk. The three disk
formats keep their meaning: thin is sparse, zeroedthick is allocated,
eagerzeroedthick is allocated and written with zeros."""

import os
import re
import uuid

from ..errors import VmdkopsError

FORMATS = ("thin", "zeroedthick", "eagerzeroedthick")
SECTOR = 512
_EXTENT = re.compile(r'^RW (\d+) (?:FLAT|VMFS) "([^"]+)"', re.MULTILINE)
_CHUNK = 1 << 20


def extent_path(descriptor):
    return descriptor[:-len(".vmdk")] + "-flat.vmdk"


def descriptor_text(extent_name, size_bytes, diskformat):
    sectors = size_bytes // SECTOR
    cylinders = max(1, min(sectors // (255 * 63), 65535))
    disk_uuid = " ".join(f"{b:02x}" for b in uuid.uuid4().bytes)
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        "CID=fffffffe\n"
        "parentCID=ffffffff\n"
        'createType="monolithicFlat"\n'
        "\n"
        "# Extent description\n"
        f'RW {sectors} FLAT "{extent_name}" 0\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        'ddb.adapterType = "lsilogic"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        'ddb.geometry.heads = "255"\n'
        'ddb.geometry.sectors = "63"\n'
        f'ddb.thinProvisioned = "{1 if diskformat == "thin" else 0}"\n'
        f'ddb.uuid = "{disk_uuid}"\n'
        'ddb.virtualHWVersion = "13"\n'
        f'ddb.vmdkops.diskFormat = "{diskformat}"\n'
    )


def _fill(fd, size_bytes, diskformat):
    if diskformat == "thin":
        os.ftruncate(fd, size_bytes)
    elif diskformat == "zeroedthick":
        os.posix_fallocate(fd, 0, size_bytes)
    else:
        zeros = bytes(_CHUNK)
        written = 0
        while written < size_bytes:
            written += os.write(fd, zeros[:min(_CHUNK, size_bytes - written)])
        os.fsync(fd)


def _make_extent(extent, write):
    """A new extent file written by ``write(fd)``; nothing is left if it fails."""
    fd = os.open(extent, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write(fd)
    except BaseException:
        os.close(fd)
        os.unlink(extent)
        raise
    os.close(fd)


def create(descriptor, size_mb, diskformat):
    """Make the extent, then the descriptor (written last and atomically, so a
    descriptor always names a complete extent). ``FileExistsError`` if either exists."""
    extent = extent_path(descriptor)
    size = size_mb * 1024 * 1024
    _make_extent(extent, lambda fd: _fill(fd, size, diskformat))
    _write_descriptor(descriptor, descriptor_text(os.path.basename(extent), size, diskformat))


def _write_descriptor(descriptor, text):
    if os.path.lexists(descriptor):
        raise FileExistsError(descriptor)
    tmp = f"{descriptor}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.link(tmp, descriptor)  # fails if a racing create got there first
    os.unlink(tmp)


def read_extent(descriptor):
    """(capacity in bytes, extent path) from a descriptor."""
    with open(descriptor) as f:
        text = f.read(64 * 1024)
    match = _EXTENT.search(text)
    if not match:
        raise VmdkopsError(f"{descriptor} is not a flat VMDK descriptor")
    return int(match.group(1)) * SECTOR, os.path.join(os.path.dirname(descriptor), match.group(2))


def info(descriptor):
    """(capacity bytes, allocated bytes) of a disk."""
    capacity, extent = read_extent(descriptor)
    return capacity, os.stat(extent).st_blocks * 512


def delete(descriptor):
    """Remove descriptor and extent; what is already gone is not an error."""
    for path in (descriptor, extent_path(descriptor)):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def clone(source, target, diskformat):
    """Copy a disk; holes of the source stay holes in a thin clone."""
    capacity, source_extent = read_extent(source)
    extent = extent_path(target)

    def write(fd):
        _fill(fd, capacity, diskformat)
        with open(source_extent, "rb") as src:
            _copy_data(src.fileno(), fd, capacity)
        os.fsync(fd)

    _make_extent(extent, write)
    _write_descriptor(target, descriptor_text(os.path.basename(extent), capacity, diskformat))


def _copy_data(src, dst, size):
    """Copy only the data regions of ``src`` (SEEK_DATA/SEEK_HOLE)."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            return
        end = os.lseek(src, start, os.SEEK_HOLE)
        while start < end:
            copied = os.copy_file_range(src, dst, end - start, start, start)
            if copied == 0:
                break
            start += copied
        offset = end
