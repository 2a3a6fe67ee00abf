"""Folders on a datastore that other hosts may write, used so that what was
checked is what is opened. A volume's folder is opened from its datastore's
root one component at a time, never through a symlink; every file in it is
opened by name relative to that open folder (``openat``), never through a
symlink, and used only when it is a regular file: a symlink, a device node or
a FIFO planted in a file's place is refused before anything reads or writes
it. New files are made with ``O_EXCL``, so nothing is ever written through a
name someone else made."""

import contextlib
import errno
import fcntl
import os
import stat

from ...errors import VmdkopsError

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO planted in a file's place must not wait for a writer.
_FILE = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
# A file being written is named <final name>.<pid>.tmp until it is whole.
TEMPORARY_SUFFIX = ".tmp"


class Tampered(VmdkopsError):
    """A file of a volume that is not what this backend wrote there: nothing
    of it is used, and nothing it names is opened, attached or removed."""


def temporary_name(name):
    return f"{name}.{os.getpid()}{TEMPORARY_SUFFIX}"


class Folder:
    """An open folder; ``path`` is its real path (none of its parts below the
    datastore's root is a symlink), for messages and for the names that
    other parts of the system record (attachments, claims, loop devices)."""

    def __init__(self, path, fd):
        self.path, self.fd = path, fd

    @classmethod
    @contextlib.contextmanager
    def open(cls, root, parts, create=False):
        """The folder ``root/parts...``: ``root`` (a datastore, as the
        administrator gave it) may be reached through symlinks, none of
        ``parts`` may be one. ``create`` makes the missing parts."""
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        path = os.path.realpath(root)
        try:
            for part in parts:
                if part in ("", ".", "..") or "/" in part:
                    raise Tampered(f"{path}/{part} is not a folder name")
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                path = os.path.join(path, part)
                try:
                    inner = os.open(part, _DIRECTORY, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise Tampered(f"{path} is not a folder (a symlink or a file is in its place); "
                                       "nothing in it is used") from None
                    raise
                os.close(fd)
                fd = inner
            yield cls(path, fd)
        finally:
            os.close(fd)

    def join(self, name):
        return os.path.join(self.path, name)

    def names(self):
        return os.listdir(self.fd)

    def entries(self):
        """``os.DirEntry``s of the folder (their ``is_dir``/``is_file`` with
        ``follow_symlinks=False`` tell what each really is)."""
        with os.scandir(self.fd) as found:
            return list(found)

    def lstat(self, name):
        return os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def exists(self, name):
        try:
            self.lstat(name)
        except OSError:  # gone, or a name too long to be there
            return False
        return True

    def check_regular(self, name, st):
        """``Tampered`` unless ``st`` (of ``name``) is a regular file's."""
        if stat.S_ISLNK(st.st_mode):
            raise Tampered(f"{self.join(name)} is a symlink; it is not followed")
        if not stat.S_ISREG(st.st_mode):
            raise Tampered(f"{self.join(name)} is not a regular file")

    def open_file(self, name, flags=os.O_RDONLY):
        """An fd of the regular file ``name``; ``FileNotFoundError`` when it is
        missing, ``Tampered`` when a symlink or anything else is in its place
        (a device or a FIFO is not even opened, unless it replaced the file
        in the moment between the look and the open: then it is closed unused)."""
        before = self.lstat(name)
        self.check_regular(name, before)
        try:
            fd = os.open(name, flags | _FILE, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise Tampered(f"{self.join(name)} changed while it was opened") from None
            raise
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or not os.path.samestat(before, opened):
            os.close(fd)
            raise Tampered(f"{self.join(name)} changed while it was opened")
        return fd

    def read(self, name, limit):
        """At most ``limit`` bytes of the regular file ``name``."""
        fd = self.open_file(name)
        try:
            chunks, left = [], limit
            while left:
                chunk = os.read(fd, left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    def create_file(self, name, mode=0o600):
        """A new file's fd for writing; ``FileExistsError`` if anything has the name."""
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE, mode, dir_fd=self.fd)

    def create_temporary(self, name):
        """(temporary name, fd) of a new locked file that will become ``name``.
        A file of that temporary name that nobody writes (left by a process
        that had this pid) is removed first, never written through."""
        tmp = temporary_name(name)
        try:
            fd = self.create_file(tmp)
        except FileExistsError:
            if self.is_locked(tmp):
                raise
            self.unlink(tmp)
            fd = self.create_file(tmp)
        # Locked while written: reconcile removes only temporary files nobody writes.
        fcntl.flock(fd, fcntl.LOCK_EX)
        return tmp, fd

    def write_whole(self, name, data, replace=True):
        """Make ``name`` hold ``data``, whole or not at all: written under a
        temporary name, then renamed over ``name`` (``replace``) or linked to
        it (else: ``FileExistsError`` if ``name`` exists)."""
        tmp, fd = self.create_temporary(name)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
            if replace:
                self.replace(tmp, name)
            else:
                self.link(tmp, name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.unlink(tmp)
            os.close(fd)

    def is_locked(self, name):
        """Whether a live process holds the write lock of the regular file
        ``name``; False when it is gone or is not a regular file."""
        try:
            fd = self.open_file(name)
        except (OSError, Tampered):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def link(self, source, target):
        os.link(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd, follow_symlinks=False)

    def replace(self, source, target):
        os.replace(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def unlink(self, name, missing_ok=False):
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def symlink(self, target, name):
        os.symlink(target, name, dir_fd=self.fd)

    def rmdir(self, name):
        os.rmdir(name, dir_fd=self.fd)

    def rename(self, source, target):
        os.rename(source, target, src_dir_fd=self.fd, dst_dir_fd=self.fd)
