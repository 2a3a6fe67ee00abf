"""Small JSON files of the installation (inventory, attachments, credentials)
changed by several processes at once. They are root's alone (mode 0600)."""

import contextlib
import fcntl
import json
import os


@contextlib.contextmanager
def locked_json(path, initial):
    """Read-modify-write of a JSON file under an exclusive lock; the new
    content replaces the file atomically when the block ends without error."""
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = initial()
        yield data
        tmp = f"{path}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
