"""Filesystems in the guest: which mkfs tools exist, making a filesystem with
a label within its type's limit, mounting, unmounting, and what is mounted
under the mount root (``/proc/mounts``)."""

import glob
import os
import subprocess

MKFS_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin")
LABEL_LIMITS = {"xfs": 12, "vfat": 11, "btrfs": 255}  # ext2/3/4: 16
# mkfs would discard the device's blocks, which makes a thick disk thin again.
NO_DISCARD = {"ext2": ["-F", "-E", "nodiscard"], "ext3": ["-F", "-E", "nodiscard"],
              "ext4": ["-F", "-E", "nodiscard"], "xfs": ["-K"]}


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


def mount(device, target, fstype, read_only):
    if os.path.lexists(target) and not os.path.isdir(target):
        raise FsError(f"{target} already exists and it's not a directory")
    os.makedirs(target, mode=0o755, exist_ok=True)
    argv = ["mount", "-t", fstype] + (["-o", "ro"] if read_only else []) + [device, target]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise FsError(f"Failed to mount device {device} at {target}: {result.stderr.strip()}")


def unmount(target):
    result = subprocess.run(["umount", target], capture_output=True, text=True, timeout=120)
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
