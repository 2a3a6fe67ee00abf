"""Filesystems in the guest: which mkfs tools exist, making a filesystem with
a label within its type's limit, mounting, unmounting, and what is mounted
under the mount root (``/proc/mounts``)."""

import glob
import os
import struct
import subprocess

MKFS_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")
LABEL_LIMITS = {"xfs": 12, "vfat": 11, "btrfs": 255}  # ext2/3/4: 16
# mkfs would discard the device's blocks, which makes a thick disk thin again.
NO_DISCARD = {"ext2": ["-F", "-E", "nodiscard"], "ext3": ["-F", "-E", "nodiscard"],
              "ext4": ["-F", "-E", "nodiscard"], "xfs": ["-K"]}


EXT_MAGIC = 0xEF53
EXT_64BIT = 0x80  # incompatible feature: the block count has a high half


class FsError(Exception):
    pass


def supported():
    """Filesystem type -> its mkfs tool."""
    tools = {}
    for folder in MKFS_DIRS:
        for path in sorted(glob.glob(os.path.join(folder, "mkfs.*"))):
            tools[os.path.basename(path).split(".", 1)[1]] = path
    return tools


def check(fstype):
    tools = supported()
    if fstype not in tools:
        raise FsError(f"Not found mkfs for {fstype}\nSupported filesystems found: "
                      f"{', '.join(sorted(tools))}")
    return tools[fstype]


def label_for(name, fstype):
    return name[:LABEL_LIMITS.get(fstype, 16)]


def mkfs(fstype, device, label):
    tool = check(fstype)
    argv = [tool] + NO_DISCARD.get(fstype, []) + ["-L", label_for(label, fstype), device]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        # mkfs follows its error with its whole usage text: the first lines say what is wrong.
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[:3])
        raise FsError(f"Failed to create filesystem on {device}: exit status {result.returncode}. "
                      f"Output = {output}")


def _ext_size(device):
    """(filesystem bytes, block bytes) from an ext2/3/4 superblock, or None."""
    with open(device, "rb") as f:
        f.seek(1024)
        block = f.read(1024)
    if len(block) < 1024 or struct.unpack_from("<H", block, 56)[0] != EXT_MAGIC:
        return None
    count_lo, = struct.unpack_from("<I", block, 4)
    block_size = 1024 << struct.unpack_from("<I", block, 24)[0]
    incompat, = struct.unpack_from("<I", block, 96)
    count_hi = struct.unpack_from("<I", block, 0x150)[0] if incompat & EXT_64BIT else 0
    return (count_hi << 32 | count_lo) * block_size, block_size


def _xfs_size(device):
    """(filesystem bytes, block bytes) from an xfs superblock, or None."""
    with open(device, "rb") as f:
        block = f.read(16)
    if len(block) < 16 or block[:4] != b"XFSB":
        return None
    block_size, blocks = struct.unpack_from(">IQ", block, 4)
    return blocks * block_size, block_size


def device_bytes(device):
    with open(device, "rb") as f:
        return f.seek(0, os.SEEK_END)


def smaller_than_device(device, fstype):
    """Whether the ext2/3/4 or xfs filesystem on ``device`` leaves a block
    or more of it unused (its volume was resized); False for others."""
    found = _ext_size(device) if fstype.startswith("ext") else _xfs_size(device) if fstype == "xfs" else None
    return found is not None and device_bytes(device) - found[0] >= found[1]


def grow_unmounted(device, fstype):
    """An ext2/3/4 filesystem smaller than its device grows to the device,
    before it is mounted; True if it grew."""
    if not fstype.startswith("ext") or not smaller_than_device(device, fstype):
        return False
    checked = subprocess.run(["e2fsck", "-f", "-p", device], capture_output=True, text=True, timeout=600)
    if checked.returncode > 1:  # 1: errors corrected
        raise FsError(f"Cannot grow the filesystem on {device}: e2fsck: {checked.stdout.strip()} "
                      f"{checked.stderr.strip()}")
    _run(["resize2fs", device], f"Cannot grow the filesystem on {device}")
    return True


def grow_mounted(device, target, fstype, read_only):
    """xfs grows only while mounted; True if it grew."""
    if fstype != "xfs" or read_only or not smaller_than_device(device, fstype):
        return False
    _run(["xfs_growfs", "-d", target], f"Cannot grow the filesystem at {target}")
    return True


def _run(argv, failure):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise FsError(f"{failure}: {(result.stderr or result.stdout).strip()}")


def mount(device, target, fstype, read_only):
    if os.path.lexists(target) and not os.path.isdir(target):
        raise FsError(f"{target} already exists and it's not a directory")
    os.makedirs(target, mode=0o755, exist_ok=True)
    argv = ["mount", "-t", fstype] + (["-o", "ro"] if read_only else []) + [device, target]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise FsError(f"Failed to mount device {device} at {target}: {result.stderr.strip()}")


def unmount(target, lazy=False):
    result = subprocess.run(["umount", "-l", target] if lazy else ["umount", target], capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise FsError(f"Unmount device at {target} failed: {result.stderr.strip()}")


def _unescape(field):
    # /proc/mounts escapes space, tab, newline and backslash as octal.
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounted(root, proc_mounts="/proc/mounts"):
    """Volume name -> device of what is mounted directly under ``root``."""
    root = os.path.normpath(root)
    found = {}
    with open(proc_mounts) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            target = _unescape(parts[1])
            if os.path.dirname(target) == root:
                found[os.path.basename(target)] = _unescape(parts[0])
    return found
