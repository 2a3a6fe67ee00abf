"""VMDK disks as plain files: a text descriptor (``monolithicFlat``) and its
raw extent ``<vol>-flat.vmdk``, as ESX lays out a flat disk. The three disk
formats keep their meaning: thin is sparse, zeroedthick is allocated,
eagerzeroedthick is allocated and written with zeros."""

import contextlib
import fcntl
import os
import re
import uuid

from ..errors import VmdkopsError
from ..faults import crashpoint

FORMATS = ("thin", "zeroedthick", "eagerzeroedthick")
SECTOR = 512
_EXTENT = re.compile(r'^RW (\d+) (?:FLAT|VMFS) "([^"]+)"', re.MULTILINE)
_FORMAT = re.compile(r'^ddb\.vmdkops\.diskFormat = "([a-z]+)"', re.MULTILINE)
_CHUNK = 1 << 20
EXTENT_SUFFIX = "-flat.vmdk"
# A file being written is named <final name>.<pid>.tmp until it is whole.
TEMPORARY_SUFFIX = ".tmp"


def extent_path(descriptor):
    return descriptor[:-len(".vmdk")] + EXTENT_SUFFIX


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


def _fill(fd, size_bytes, diskformat, step="disk:writing"):
    """Allocate an extent as its format says; ``step`` is the fault point
    inside the write (after its first part)."""
    if diskformat == "thin":
        os.ftruncate(fd, size_bytes)
    elif diskformat == "zeroedthick":
        os.posix_fallocate(fd, 0, size_bytes)
    else:
        _fill_zeros(fd, size_bytes, step)
    crashpoint(step)


def _fill_zeros(fd, size_bytes, step):
    zeros = bytes(_CHUNK)
    written = 0
    while written < size_bytes:
        written += os.write(fd, zeros[:min(_CHUNK, size_bytes - written)])
        crashpoint(step)
    os.fsync(fd)


def temporary_name(path):
    return f"{path}.{os.getpid()}{TEMPORARY_SUFFIX}"


def is_locked(path):
    """Whether a live process holds the write lock of a file (an extent or
    temporary file being written); False when the file is gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def _new_file(path):
    """A new file written under a temporary name while holding its write lock
    (so that reconcile leaves it alone), then linked to ``path``. The lock is
    held until the block ends: an extent stays locked while its descriptor
    is written. ``FileExistsError`` if ``path`` exists and is not a leftover;
    on any failure nothing is left."""
    tmp = temporary_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    linked = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd, lambda: _link(tmp, path)
        linked = True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if not linked:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), os.stat(path)):
                    os.unlink(path)
        os.close(fd)


def _link(tmp, path):
    """Give ``tmp`` the name ``path`` unless a file has it (a racing create
    wins). An extent without its descriptor that nobody is writing is what
    an interrupted create or remove left: it is replaced."""
    try:
        os.link(tmp, path)
        return
    except FileExistsError:
        if not path.endswith(EXTENT_SUFFIX) or os.path.lexists(path[:-len(EXTENT_SUFFIX)] + ".vmdk") \
                or is_locked(path):
            raise
    os.unlink(path)
    os.link(tmp, path)


def _make(descriptor, size_bytes, diskformat, write):
    """The extent written by ``write(fd)``, then the descriptor: the
    descriptor is written last, so one always names a complete extent."""
    if os.path.lexists(descriptor):
        raise FileExistsError(descriptor)
    extent = extent_path(descriptor)
    with _new_file(extent) as (fd, publish_extent):
        write(fd)
        publish_extent()
        crashpoint("disk:extent")
        with _new_file(descriptor) as (dfd, publish_descriptor):
            os.write(dfd, descriptor_text(os.path.basename(extent), size_bytes, diskformat).encode())
            os.fsync(dfd)
            crashpoint("disk:descriptor")
            publish_descriptor()


def create(descriptor, size_mb, diskformat):
    """A new disk. ``FileExistsError`` if it exists or is being made."""
    size = size_mb * 1024 * 1024
    _make(descriptor, size, diskformat, lambda fd: _fill(fd, size, diskformat))


def grow(descriptor, size_mb):
    """Make a disk ``size_mb`` large: its extent first, as its format says,
    then its descriptor, replaced whole. A crash leaves the old size or the
    new one (an extent longer than its descriptor says is harmless); a
    disk that has the size already is left as it is."""
    capacity, extent = read_extent(descriptor)
    size = size_mb * 1024 * 1024
    if size <= capacity:
        return
    with open(descriptor) as f:
        text = f.read()
    diskformat = (_FORMAT.search(text) or [None, "thin"])[1]
    fd = os.open(extent, os.O_WRONLY)
    try:
        if diskformat == "thin":
            os.ftruncate(fd, max(size, os.fstat(fd).st_size))
        elif diskformat == "zeroedthick":
            os.posix_fallocate(fd, capacity, size - capacity)
        else:
            os.lseek(fd, capacity, os.SEEK_SET)
            _fill_zeros(fd, size - capacity, "resize:writing")
    finally:
        os.close(fd)
    crashpoint("resize:extent")
    sectors = size // SECTOR
    cylinders = max(1, min(sectors // (255 * 63), 65535))
    text = _EXTENT.sub(lambda m: m.group(0).replace(f"RW {m.group(1)} ", f"RW {sectors} ", 1), text, count=1)
    text = re.sub(r'^ddb\.geometry\.cylinders = "\d+"', f'ddb.geometry.cylinders = "{cylinders}"', text,
                  count=1, flags=re.MULTILINE)
    tmp = temporary_name(descriptor)
    with open(tmp, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
        os.replace(tmp, descriptor)
    crashpoint("resize:descriptor")


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

    def write(fd):
        _fill(fd, capacity, diskformat, step=None)
        with open(source_extent, "rb") as src:
            _copy_data(src.fileno(), fd, capacity)
        os.fsync(fd)

    _make(target, capacity, diskformat, write)


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
            crashpoint("disk:writing")
        offset = end
