"""Mounting a volume's share on a node (D14): ``cifs`` is the kernel's SMB
client (``mount -t cifs``, production); ``smbnetfs`` is a FUSE client, for
kernels without CIFS (as the test machines). Both retry while the file
server is not yet reachable, up to a deadline, and leave nothing mounted
when they fail. Passwords go through root-only files, never a command line;
both speak SMB3 with encryption (the server requires it)."""

import logging
import os
import shutil
import subprocess
import time

from .. import fs
from . import pids

log = logging.getLogger("vmdkops.plugin")
SHARE = "vfileshare"


class MountFailed(Exception):
    pass


def _private_file(path, text):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class CifsMount:
    name = "cifs"

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def mount(self, volume, target, address, port, user, password, deadline):
        credentials = os.path.join(self.state_dir, "cifs", f"{volume}.credentials")
        _private_file(credentials, f"username={user}\npassword={password}\n")
        os.makedirs(target, exist_ok=True)
        argv = ["mount", "-t", "cifs", "-o", f"credentials={credentials},port={port},vers=3.0,seal",
                f"//{address}/{SHARE}", target]
        while True:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            if result.returncode == 0:
                return
            # 255 (or 32 with "host is down"): the server is not reachable yet.
            if time.monotonic() > deadline or result.returncode not in (32, 255):
                raise MountFailed(result.stderr.strip() or f"mount exited with {result.returncode}")
            time.sleep(0.5)

    def unmount(self, volume, target):
        fs.unmount(target)
        credentials = os.path.join(self.state_dir, "cifs", f"{volume}.credentials")
        if os.path.exists(credentials):
            os.unlink(credentials)


class SmbnetfsMount:
    """One smbnetfs process per volume, in its own session (it outlives a
    plugin restart, and the containers' mounts with it), mounted under the
    state directory; the share's folder, whose path has a colon Docker
    cannot take, is then bound to the volume's mount point."""
    name = "smbnetfs"

    def __init__(self, state_dir):
        self.state_dir = state_dir

    def _home(self, volume):
        return os.path.join(self.state_dir, "smbnetfs", volume)

    def mount(self, volume, target, address, port, user, password, deadline):
        home = self._home(volume)
        tree = os.path.join(home, "tree")
        self._stop(volume)
        os.makedirs(tree, exist_ok=True)
        # The credentials are for this server's share alone (smbnetfs would
        # give credentials without a host to any server it browses), and the
        # client asks for SMB3's encryption (the server requires it anyway).
        _private_file(os.path.join(home, ".smb", "smbnetfs.conf"),
                      f'auth "{address}/{SHARE}" "{user}" "{password}"\nlog_file "{home}/smbnetfs.log"\n')
        _private_file(os.path.join(home, ".smb", "smb.conf"),
                      "[global]\n    client min protocol = SMB3\n    client smb encrypt = required\n")
        with open(os.path.join(home, "smbnetfs.out"), "w") as out:
            process = subprocess.Popen(["smbnetfs", tree, "-o", "allow_other,big_writes", "-f"],
                                       env=dict(os.environ, HOME=home), stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        pids.write(os.path.join(home, "pid"), process.pid)
        share = os.path.join(tree, f"{address}:{port}", SHARE)
        problem = None
        while time.monotonic() < deadline:
            if process.poll() is not None:
                problem = f"smbnetfs exited with {process.returncode}"
                break
            try:
                os.listdir(share)
                break
            except OSError as exc:
                problem = exc
                time.sleep(0.2)
        else:
            problem = problem or "the share did not answer in time"
        if problem is not None and not _listable(share):
            self._stop(volume)
            raise MountFailed(f"{share}: {problem}")
        os.makedirs(target, exist_ok=True)
        result = subprocess.run(["mount", "--bind", share, target], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            self._stop(volume)
            raise MountFailed(result.stderr.strip())

    def unmount(self, volume, target):
        fs.unmount(target)
        self._stop(volume)

    def _stop(self, volume):
        """Unmount this volume's smbnetfs tree and end its process."""
        home = self._home(volume)
        tree = os.path.join(home, "tree")
        if os.path.ismount(tree):
            subprocess.run(["umount", "-l", tree], capture_output=True, timeout=60)
        pids.stop(os.path.join(home, "pid"), tree)
        shutil.rmtree(os.path.join(home, ".smb"), ignore_errors=True)


def _listable(path):
    try:
        os.listdir(path)
        return True
    except OSError:
        return False


def method(name, state_dir):
    return {"cifs": CifsMount, "smbnetfs": SmbnetfsMount}[name](state_dir)
