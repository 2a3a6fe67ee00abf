"""Loop devices through the kernel's own interface: a device is bound to an
open file (``LOOP_SET_FD``), so the file that was checked is the file that is
attached; ``losetup FILE`` would open the file again by its name, which
someone could have changed in between. Which devices hold a file is asked by
its inode, so no name of the file (a hard link, a rename) hides a device."""

import contextlib
import errno
import fcntl
import glob
import os
import stat
import struct
import subprocess

from ...errors import VmdkopsError

LOOP_SET_FD = 0x4C00
LOOP_GET_STATUS64 = 0x4C05
LOOP_CTL_GET_FREE = 0x4C82
LOOP_MAJOR = 7
# struct loop_info64 begins with lo_device and lo_inode (__u64 each); 232 bytes in all.
_INFO64 = struct.Struct("=QQ216x")


def attach(fd):
    """The path of a free loop device now bound to the open file ``fd`` (read-write
    when ``fd`` is)."""
    control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(64):  # another process may take the free device first
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            path = f"/dev/loop{number}"
            with contextlib.suppress(FileExistsError):  # no udev: the node is made here
                os.mknod(path, stat.S_IFBLK | 0o660, os.makedev(LOOP_MAJOR, number))
            device = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(device, LOOP_SET_FD, fd)
                return path
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise VmdkopsError(f"Failed to attach disk: {path}: {exc.strerror}") from None
            finally:
                os.close(device)
    finally:
        os.close(control)
    raise VmdkopsError("Failed to attach disk: no free loop device")


def backing_file(device):
    """The file behind a loop device, or None when it is not attached."""
    name = os.path.basename(device)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().strip().removesuffix(" (deleted)")
    except OSError:
        return None


def bound():
    """Every loop device of this machine that is bound to a file."""
    return ["/dev/" + backing.split("/")[3] for backing in glob.glob("/sys/block/loop*/loop/backing_file")]


def holding(st):
    """The loop devices bound to the file of ``os.stat`` result ``st``."""
    found = []
    for device in bound():
        try:
            fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            info = bytearray(_INFO64.size)
            fcntl.ioctl(fd, LOOP_GET_STATUS64, info)
        except OSError:  # unbound since it was listed
            continue
        finally:
            os.close(fd)
        if _INFO64.unpack(info) == (st.st_dev, st.st_ino):
            found.append(device)
    return found


def detach(device, extent):
    """Unbind ``device``, only while it still backs ``extent``: other
    processes on the machine use loop devices too."""
    if backing_file(device) == extent:
        result = subprocess.run(["losetup", "--detach", device], capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0 and backing_file(device) == extent:
            raise VmdkopsError(f"Failed to detach {extent}: {result.stderr.strip()}")
