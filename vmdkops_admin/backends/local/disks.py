"""Volumes on the local backend's datastores: real VMDK files under
``dockvols/<vmgroup uuid>/`` with their side-cars, and the leftovers of
interrupted creates. Every file is reached through an open ``Folder``: a
datastore folder may be written by other hosts, so nothing in it is
trusted to be what its name says (``folder``, ``vmdkfile``)."""

import contextlib
import os
import re
import stat

from ...errors import VmdkopsError
from ...paths import DOCKVOLS, shared_db_path
from .. import Disk, Leftover
from . import sidecar, vmdkfile
from .devices import CLAIM_SUFFIX
from .folder import Folder, Tampered

# Extents, snapshot deltas and change-tracking files sit beside descriptors.
_NOT_A_VOLUME = re.compile(r"-(flat|delta|ctk|digest|\d{6})\.vmdk$")
# An extent or a claim (leftovers when their descriptor is missing), or a
# temporary file of a descriptor, extent, side-car or claim:
# <volume><suffix>[.<pid>.tmp].
_LEFTOVER = re.compile(r"^(.+?)(-flat\.vmdk|\.vmdk|\.vmfd|\.lck)(\.\d+\.tmp)?$")


class Disks:
    # -- where a file is ---------------------------------------------------------------

    def _place(self, path):
        """(datastore, folder parts under its root, file name) of a path in a
        datastore's ``dockvols`` or in one of its vmgroup folders."""
        for ds in self.datastores():
            for root in {ds.path, os.path.realpath(ds.path)}:
                root = root.rstrip("/") + "/"
                if path.startswith(root):
                    parts = path[len(root):].split("/")
                    if parts[0] == DOCKVOLS and len(parts) in (2, 3):
                        return ds, parts[:-1], parts[-1]
        raise VmdkopsError(f"{path} is not in a volume folder of any datastore")

    @contextlib.contextmanager
    def _folder(self, path, create=False):
        """(open ``Folder``, file name) of a path in a volume folder."""
        ds, parts, name = self._place(path)
        with Folder.open(ds.path, parts, create=create) as folder:
            yield folder, name

    @contextlib.contextmanager
    def _volume(self, descriptor):
        """(open ``Folder``, volume name) of a descriptor."""
        with self._folder(descriptor) as (folder, name):
            if not name.endswith(vmdkfile.DESCRIPTOR_SUFFIX):
                raise VmdkopsError(f"{descriptor} is not a disk descriptor")
            yield folder, name[:-len(vmdkfile.DESCRIPTOR_SUFFIX)]

    @contextlib.contextmanager
    def _dockvols(self, datastore, create=False):
        with Folder.open(datastore.path, [DOCKVOLS], create=create) as folder:
            yield folder

    # -- vmgroup folders -----------------------------------------------------------------

    def vmgroup_renamed(self, vmgroup_uuid, old_name, new_name):
        for ds in self.datastores():
            with contextlib.suppress(FileNotFoundError), self._dockvols(ds) as dockvols:
                if not _is_folder(dockvols, vmgroup_uuid):
                    continue
                if _is_link(dockvols, old_name):
                    dockvols.unlink(old_name)
                dockvols.symlink(vmgroup_uuid, new_name)

    def vmgroup_removed(self, vmgroup_uuid, name):
        for ds in self.datastores():
            with contextlib.suppress(FileNotFoundError), self._dockvols(ds) as dockvols:
                if _is_link(dockvols, name):
                    dockvols.unlink(name)
                # Only an empty folder goes: a disk the index did not know is kept
                # for ``volume reconcile`` to report.
                with contextlib.suppress(OSError):
                    dockvols.rmdir(vmgroup_uuid)

    def vmgroup_folder_moved(self, datastore, old_uuid, new_uuid, name):
        try:
            with self._dockvols(datastore) as dockvols:
                if not _is_folder(dockvols, old_uuid):
                    return None
                if dockvols.exists(new_uuid):
                    return "exists"
                dockvols.rename(old_uuid, new_uuid)
                if _is_link(dockvols, name):
                    dockvols.unlink(name)
                dockvols.symlink(new_uuid, name)
        except FileNotFoundError:
            return None
        return "moved"

    def vmgroup_dir(self, datastore, vmgroup_uuid, vmgroup_name, create=False):
        """``dockvols/<vmgroup-uuid>`` on a datastore, with its ``dockvols/<name>``
        link made alongside when ``create`` is set."""
        if create:
            with Folder.open(datastore.path, [DOCKVOLS, vmgroup_uuid], create=True):
                pass
            if vmgroup_name:
                with self._dockvols(datastore) as dockvols, contextlib.suppress(FileExistsError):
                    dockvols.symlink(vmgroup_uuid, vmgroup_name)
        return os.path.join(datastore.path, DOCKVOLS, vmgroup_uuid)

    def shared_db_file(self, datastore):
        return shared_db_path(datastore.path)

    # -- disks -----------------------------------------------------------------------------

    def descriptor(self, datastore, vmgroup_uuid, volume):
        return os.path.join(datastore.path, DOCKVOLS, vmgroup_uuid, vmdkfile.descriptor_name(volume))

    def disks(self, datastore):
        """Every volume's ``Disk``; one whose files fail their checks has no
        capacity and says why in ``problem``."""
        found = []
        for vmgroup_uuid, folder in self._volume_folders(datastore):
            for volume in _volumes_in(folder):
                size, problem = None, None
                try:
                    size = vmdkfile.info(folder, volume)[0]
                except Tampered as exc:
                    problem = exc.message
                except (OSError, VmdkopsError):
                    pass
                # Real paths, as attachments and claims name disks.
                found.append(Disk(vmgroup_uuid, volume, folder.join(vmdkfile.descriptor_name(volume)),
                                  size, problem))
        return found

    def volume_files(self, datastore):
        """(vmgroup uuid or None for the dockvols root, volume name, descriptor)
        of every volume descriptor on a datastore."""
        for vmgroup_uuid, folder in self._volume_folders(datastore):
            for volume in _volumes_in(folder):
                yield vmgroup_uuid, volume, folder.join(vmdkfile.descriptor_name(volume))

    def _volume_folders(self, datastore):
        """(vmgroup uuid or None, open ``Folder``) of ``dockvols`` and of each
        real folder in it (the name links and anything planted are skipped)."""
        try:
            with self._dockvols(datastore) as dockvols:
                entries = sorted(dockvols.entries(), key=lambda e: e.name)
                yield None, dockvols
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        with contextlib.suppress(OSError, Tampered), \
                                Folder.open(datastore.path, [DOCKVOLS, entry.name]) as folder:
                            yield entry.name, folder
        except (FileNotFoundError, Tampered):
            return

    def disk_exists(self, descriptor):
        """Whether anything has the descriptor's name (what is there is
        checked when it is used)."""
        try:
            with self._volume(descriptor) as (folder, volume):
                return folder.exists(vmdkfile.descriptor_name(volume))
        except (OSError, Tampered):
            return False

    def create_disk(self, descriptor, size_mb, diskformat, policy=None):
        with self._volume(descriptor) as (folder, volume):
            vmdkfile.create(folder, volume, size_mb, diskformat)

    def clone_disk(self, source, target, diskformat):
        with self._volume(source) as (source_folder, source_volume), \
                self._volume(target) as (folder, volume):
            vmdkfile.clone(source_folder, source_volume, folder, volume, diskformat)

    def grow_disk(self, descriptor, size_mb, diskformat):
        with self._volume(descriptor) as (folder, volume):
            vmdkfile.grow(folder, volume, size_mb)  # the descriptor says its format

    def check_disk(self, descriptor):
        with self._volume(descriptor) as (folder, volume):
            vmdkfile.check(folder, volume)

    def delete_disk(self, descriptor):
        with self._volume(descriptor) as (folder, volume):
            vmdkfile.delete(folder, volume)
            sidecar.remove(folder, volume)

    def disk_info(self, descriptor):
        """(capacity bytes, allocated bytes)."""
        with self._volume(descriptor) as (folder, volume):
            return vmdkfile.info(folder, volume)

    def allocated_bytes_many(self, descriptors):
        """Space each disk takes (None when it is gone): one stat of each extent."""
        sizes = []
        for descriptor in descriptors:
            try:
                st = os.lstat(descriptor[:-len(vmdkfile.DESCRIPTOR_SUFFIX)] + vmdkfile.EXTENT_SUFFIX)
                sizes.append(st.st_blocks * 512)
            except OSError:
                sizes.append(None)
        return sizes

    # -- side-cars -------------------------------------------------------------------------

    def supports_policies(self, datastore):
        """Policies are recorded with the volume on every local datastore."""
        return True

    def apply_policy(self, descriptor, name, content):
        """Record the policy in the volume's side-car (a local disk has no
        storage layer to give it to)."""
        with self._volume(descriptor) as (folder, volume):
            meta = sidecar.load(folder, volume)
            if meta is None:
                raise VmdkopsError(f"No metadata for {descriptor}")
            meta["storagePolicy"] = {"name": name, "content": content}
            sidecar.save(folder, volume, meta)

    def read_metadata(self, descriptor):
        try:
            with self._volume(descriptor) as (folder, volume):
                return sidecar.load(folder, volume)
        except (OSError, Tampered):
            return None

    def write_metadata(self, descriptor, meta, guard=None):
        with self._volume(descriptor) as (folder, volume):
            return sidecar.save(folder, volume, meta, guard)

    # -- leftovers ----------------------------------------------------------------------------

    def leftover_files(self):
        leftovers = []
        for ds in self.datastores():
            for _, folder in self._volume_folders(ds):
                names = set(folder.names())
                for name in sorted(names):
                    match = _LEFTOVER.match(name)
                    if match is None or not (match.group(3) or (
                            match.group(2) in (vmdkfile.EXTENT_SUFFIX, CLAIM_SUFFIX)
                            and vmdkfile.descriptor_name(match.group(1)) not in names)):
                        continue
                    leftovers.append(Leftover(ds, match.group(1), folder.join(name),
                                              folder.join(vmdkfile.descriptor_name(match.group(1))),
                                              folder.is_locked(name)))
        return leftovers

    def remove_leftover(self, leftover):
        with self._folder(leftover.path) as (folder, name):
            if not folder.is_locked(name):
                folder.unlink(name, missing_ok=True)

    def volume_of(self, descriptor):
        folder, file_name = os.path.split(os.path.realpath(descriptor))
        for ds in self.datastores():
            dockvols = os.path.realpath(os.path.join(ds.path, DOCKVOLS))
            if folder == dockvols:
                return ds, None, file_name[:-len(".vmdk")]
            if os.path.dirname(folder) == dockvols:
                return ds, os.path.basename(folder), file_name[:-len(".vmdk")]
        return None, None, None


def _volumes_in(folder):
    """Names of the volumes whose descriptors are in a folder."""
    for name in sorted(folder.names()):
        if name.endswith(vmdkfile.DESCRIPTOR_SUFFIX) and not _NOT_A_VOLUME.search(name):
            yield name[:-len(vmdkfile.DESCRIPTOR_SUFFIX)]


def _is_folder(dockvols, name):
    try:
        return stat.S_ISDIR(dockvols.lstat(name).st_mode)
    except OSError:
        return False


def _is_link(dockvols, name):
    try:
        return stat.S_ISLNK(dockvols.lstat(name).st_mode)
    except OSError:
        return False
