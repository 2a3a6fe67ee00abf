"""The helpers a vfile plugin starts in sessions of their own (etcd,
smbnetfs, the relays), known by pid files in the state directory. A pid in
a file is the helper's only while that process still runs the helper's
program: after a reboot, or in the new container of a restarted managed
plugin, the same number can be any other process (the plugin itself)."""

import os
import signal
import time


def write(path, value):
    """A pid (or a relay's target) written whole: a reader never sees half."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{value}\n")
    os.replace(tmp, path)


def running(path, word):
    """The pid in ``path`` if that process's command line has ``word`` (its
    program, or a path only that helper has), else None."""
    try:
        with open(path) as f:
            pid = int(f.read())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    if pid == os.getpid() or word not in argv:
        return None
    return pid


def stop(path, word, wait=0.0):
    """SIGTERM the helper of ``path`` if it runs, waiting up to ``wait``
    seconds for it to end; the pid file is removed."""
    pid = running(path, word)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pid = None
    deadline = time.monotonic() + wait
    while pid is not None and time.monotonic() < deadline and running(path, word) == pid:
        try:
            os.waitpid(pid, os.WNOHANG)  # our child: reap it, or it stays a zombie
        except ChildProcessError:
            pass
        time.sleep(0.05)
    try:
        os.unlink(path)
    except OSError:
        pass
