"""VMDK disks as plain files: a text descriptor (``monolithicFlat``) and its
raw extent ``<vol>-flat.vmdk``, as ESX lays out a flat disk. The three disk
formats keep their meaning: thin is sparse, zeroedthick is allocated,
eagerzeroedthick is allocated and written with zeros.

A disk is exactly its own two files, in one open ``Folder``. The extent is
``<vol>-flat.vmdk`` beside ``<vol>.vmdk``, never a name read from the
descriptor: the descriptor's extent line must name exactly that file (a
descriptor written on a datastore that another host can write may name
anything), and the extent must be a regular file with no other name (a hard
link would be another volume's data). A disk that fails either check is
``Tampered``, and nothing of it is opened, attached, truncated or removed."""

import contextlib
import fcntl
import os
import re
import uuid

from ...faults import crashpoint
from .folder import Tampered

FORMATS = ("thin", "zeroedthick", "eagerzeroedthick")
SECTOR = 512
DESCRIPTOR_SUFFIX = ".vmdk"
EXTENT_SUFFIX = "-flat.vmdk"
MAX_DESCRIPTOR = 64 * 1024
# An extent line: access, sectors, type, the file's name in quotes (the
# greedy group takes it to the line's last quote, as the names written
# before quotes were refused have them) and an optional offset.
_EXTENT = re.compile(r'^(?:RW|RDONLY|NOACCESS) (\d+) (\w+) "(.*)"(?: (\d+))?[ \t]*$', re.MULTILINE)
_FORMAT = re.compile(r'^ddb\.vmdkops\.diskFormat = "([a-z]+)"', re.MULTILINE)
_CHUNK = 1 << 20


def extent_name(volume):
    return volume + EXTENT_SUFFIX


def descriptor_name(volume):
    return volume + DESCRIPTOR_SUFFIX


def descriptor_text(extent, size_bytes, diskformat):
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
        f'RW {sectors} FLAT "{extent}" 0\n'
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


# -- reading a disk: every check before anything is used ------------------------------

@contextlib.contextmanager
def _of_volume(volume):
    """A ``Tampered`` error names the volume and says that its disk is not used."""
    try:
        yield
    except Tampered as exc:
        if exc.message.startswith(f"Volume {volume}: "):
            raise
        raise Tampered(f"Volume {volume}: {exc.message}; the disk is not used") from None


def read_descriptor(folder, volume):
    """The text of a volume's descriptor and its capacity in bytes, once its
    one extent line names the volume's own extent."""
    with _of_volume(volume):
        text = folder.read(descriptor_name(volume), MAX_DESCRIPTOR).decode("utf-8", "replace")
    extents = _EXTENT.findall(text)
    if len(extents) != 1 or extents[0][1] not in ("FLAT", "VMFS"):
        raise Tampered(f"Volume {volume}: {folder.join(descriptor_name(volume))} is not the "
                       "descriptor of a flat disk with one extent; the disk is not used")
    sectors, _, named, offset = extents[0]
    if named != extent_name(volume):
        raise Tampered(f"Volume {volume}: its descriptor names the extent \"{named}\", not its own "
                       f"\"{extent_name(volume)}\"; the disk is not used")
    if offset not in ("", "0"):
        raise Tampered(f"Volume {volume}: its descriptor starts the disk at sector {offset} of its "
                       "extent, not at 0; the disk is not used")
    return text, int(sectors) * SECTOR


def _check_extent(folder, volume, st):
    with _of_volume(volume):
        folder.check_regular(extent_name(volume), st)
    if st.st_nlink != 1:
        raise Tampered(f"Volume {volume}: {folder.join(extent_name(volume))} has other names "
                       "(hard links); the disk is not used")


def check(folder, volume):
    """``Tampered`` unless the disk's descriptor names its own extent; its
    extent may be missing (an interrupted create or remove)."""
    read_descriptor(folder, volume)
    with contextlib.suppress(FileNotFoundError):
        _check_extent(folder, volume, folder.lstat(extent_name(volume)))


def info(folder, volume):
    """(capacity bytes, allocated bytes) of a disk, once both its files pass their checks."""
    size = read_descriptor(folder, volume)[1]
    st = folder.lstat(extent_name(volume))
    _check_extent(folder, volume, st)
    return size, st.st_blocks * 512


def open_extent(folder, volume, flags):
    """(fd, capacity in bytes) of a disk's extent, checked as it is opened:
    the fd is the file that passed the checks."""
    size = read_descriptor(folder, volume)[1]
    with _of_volume(volume):
        fd = folder.open_file(extent_name(volume), flags)
    try:
        _check_extent(folder, volume, os.fstat(fd))
    except Tampered:
        os.close(fd)
        raise
    return fd, size


# -- writing a disk ----------------------------------------------------------------------

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


@contextlib.contextmanager
def _new_file(folder, name):
    """A new file written under a temporary name while holding its write lock
    (so that reconcile leaves it alone), then linked to ``name``. The lock is
    held until the block ends: an extent stays locked while its descriptor
    is written. ``FileExistsError`` if ``name`` exists and is not a leftover;
    on any failure nothing is left."""
    tmp, fd = folder.create_temporary(name)
    linked = False
    try:
        yield fd, lambda: _link(folder, tmp, name)
        linked = True
    finally:
        folder.unlink(tmp, missing_ok=True)
        if not linked:
            with contextlib.suppress(OSError):
                if os.path.samestat(os.fstat(fd), folder.lstat(name)):
                    folder.unlink(name)
        os.close(fd)


def _link(folder, tmp, name):
    """Give ``tmp`` the name ``name`` unless a file has it (a racing create
    wins). An extent without its descriptor that nobody is writing is what
    an interrupted create or remove left: it is replaced."""
    try:
        folder.link(tmp, name)
        return
    except FileExistsError:
        volume = name[:-len(EXTENT_SUFFIX)]
        if not name.endswith(EXTENT_SUFFIX) or folder.exists(descriptor_name(volume)) \
                or folder.is_locked(name):
            raise
    folder.unlink(name)
    folder.link(tmp, name)


def _make(folder, volume, size_bytes, diskformat, write):
    """The extent written by ``write(fd)``, then the descriptor: the
    descriptor is written last, so one always names a complete extent."""
    if folder.exists(descriptor_name(volume)):
        raise FileExistsError(folder.join(descriptor_name(volume)))
    with _new_file(folder, extent_name(volume)) as (fd, publish_extent):
        write(fd)
        publish_extent()
        crashpoint("disk:extent")
        with _new_file(folder, descriptor_name(volume)) as (dfd, publish_descriptor):
            os.write(dfd, descriptor_text(extent_name(volume), size_bytes, diskformat).encode())
            os.fsync(dfd)
            crashpoint("disk:descriptor")
            publish_descriptor()


def create(folder, volume, size_mb, diskformat):
    """A new disk. ``FileExistsError`` if it exists or is being made."""
    size = size_mb * 1024 * 1024
    _make(folder, volume, size, diskformat, lambda fd: _fill(fd, size, diskformat))


def grow(folder, volume, size_mb):
    """Make a disk ``size_mb`` large: its extent first, as its format says,
    then its descriptor, replaced whole. A crash leaves the old size or the
    new one (an extent longer than its descriptor says is harmless); a
    disk that has the size already is left as it is."""
    text, old = read_descriptor(folder, volume)
    size = size_mb * 1024 * 1024
    if size <= old:
        return
    diskformat = (_FORMAT.search(text) or [None, "thin"])[1]
    fd, _ = open_extent(folder, volume, os.O_WRONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if diskformat == "thin":
            os.ftruncate(fd, max(size, os.fstat(fd).st_size))
        elif diskformat == "zeroedthick":
            os.posix_fallocate(fd, old, size - old)
        else:
            os.lseek(fd, old, os.SEEK_SET)
            _fill_zeros(fd, size - old, "resize:writing")
    finally:
        os.close(fd)
    crashpoint("resize:extent")
    sectors = size // SECTOR
    cylinders = max(1, min(sectors // (255 * 63), 65535))
    text = _EXTENT.sub(lambda m: m.group(0).replace(f" {m.group(1)} ", f" {sectors} ", 1), text, count=1)
    text = re.sub(r'^ddb\.geometry\.cylinders = "\d+"', f'ddb.geometry.cylinders = "{cylinders}"', text,
                  count=1, flags=re.MULTILINE)
    folder.write_whole(descriptor_name(volume), text.encode())
    crashpoint("resize:descriptor")


def delete(folder, volume):
    """Remove descriptor and extent; what is already gone is not an error. A
    disk that fails its checks is refused, and nothing removed."""
    if folder.exists(descriptor_name(volume)):
        check(folder, volume)
    for name in (descriptor_name(volume), extent_name(volume)):
        folder.unlink(name, missing_ok=True)


def clone(source_folder, source, folder, volume, diskformat):
    """Copy a disk; holes of the source stay holes in a thin clone."""
    source_fd, size = open_extent(source_folder, source, os.O_RDONLY)

    def write(fd):
        _fill(fd, size, diskformat, step=None)
        _copy_data(source_fd, fd, size)
        os.fsync(fd)

    try:
        _make(folder, volume, size, diskformat, write)
    finally:
        os.close(source_fd)


def _copy_data(src, dst, size):
    """Copy only the data regions of ``src`` (SEEK_DATA/SEEK_HOLE)."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(src, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            return
        end = min(os.lseek(src, start, os.SEEK_HOLE), size)
        while start < end:
            copied = os.copy_file_range(src, dst, end - start, start, start)
            if copied == 0:
                break
            start += copied
            crashpoint("disk:writing")
        offset = end
