"""Volumes on the local backend's datastores: real VMDK files under
``dockvols/<vmgroup uuid>/`` with their side-cars, and the leftovers of
interrupted creates."""

import contextlib
import os
import re

from ... import sidecar
from ...errors import VmdkopsError
from ...paths import DOCKVOLS, shared_db_path
from .. import Disk, Leftover, vmdkfile
from .devices import CLAIM_SUFFIX

# Extents, snapshot deltas and change-tracking files sit beside descriptors.
_NOT_A_VOLUME = re.compile(r"-(flat|delta|ctk|digest|\d{6})\.vmdk$")
# An extent or a claim (leftovers when their descriptor is missing), or a
# temporary file of a descriptor, extent, side-car or claim:
# <volume><suffix>[.<pid>.tmp].
_LEFTOVER = re.compile(r"^(.+?)(-flat\.vmdk|\.vmdk|\.vmfd|\.lck)(\.\d+\.tmp)?$")


class Disks:
    def vmgroup_renamed(self, vmgroup_uuid, old_name, new_name):
        for ds in self.datastores():
            dockvols = os.path.join(ds.path, DOCKVOLS)
            if not os.path.isdir(os.path.join(dockvols, vmgroup_uuid)):
                continue
            old_link = os.path.join(dockvols, old_name)
            if os.path.islink(old_link):
                os.unlink(old_link)
            os.symlink(vmgroup_uuid, os.path.join(dockvols, new_name))

    def vmgroup_removed(self, vmgroup_uuid, name):
        for ds in self.datastores():
            dockvols = os.path.join(ds.path, DOCKVOLS)
            link = os.path.join(dockvols, name)
            if os.path.islink(link):
                os.unlink(link)
            # Only an empty folder goes: a disk the index did not know is kept
            # for ``volume reconcile`` to report.
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(os.path.join(dockvols, vmgroup_uuid))

    def vmgroup_folder_moved(self, datastore, old_uuid, new_uuid, name):
        dockvols = os.path.join(datastore.path, DOCKVOLS)
        source, target = os.path.join(dockvols, old_uuid), os.path.join(dockvols, new_uuid)
        if not os.path.isdir(source) or os.path.islink(source):
            return None
        if os.path.exists(target):
            return "exists"
        os.rename(source, target)
        link = os.path.join(dockvols, name)
        if os.path.islink(link):
            os.unlink(link)
        os.symlink(new_uuid, link)
        return "moved"

    def vmgroup_dir(self, datastore, vmgroup_uuid, vmgroup_name, create=False):
        """``dockvols/<vmgroup-uuid>`` on a datastore, with its ``dockvols/<name>``
        link made alongside when ``create`` is set."""
        dockvols = os.path.join(datastore.path, DOCKVOLS)
        folder = os.path.join(dockvols, vmgroup_uuid)
        if create and not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
        if create and vmgroup_name and not os.path.lexists(os.path.join(dockvols, vmgroup_name)):
            with contextlib.suppress(FileExistsError):
                os.symlink(vmgroup_uuid, os.path.join(dockvols, vmgroup_name))
        return folder

    def disks(self, datastore):
        found = []
        for vmgroup_uuid, volume, descriptor in self.volume_files(datastore):
            try:
                capacity = vmdkfile.read_extent(descriptor)[0]
            except (OSError, VmdkopsError):
                capacity = None
            # Real paths, as attachments and claims name disks.
            found.append(Disk(vmgroup_uuid, volume, os.path.realpath(descriptor), capacity))
        return found

    def shared_db_file(self, datastore):
        return shared_db_path(datastore.path)

    def descriptor(self, datastore, vmgroup_uuid, volume):
        return os.path.join(datastore.path, DOCKVOLS, vmgroup_uuid, volume + ".vmdk")

    def disk_exists(self, descriptor):
        return os.path.isfile(descriptor)

    def create_disk(self, descriptor, size_mb, diskformat, policy=None):
        vmdkfile.create(descriptor, size_mb, diskformat)

    def clone_disk(self, source, target, diskformat):
        vmdkfile.clone(source, target, diskformat)

    def grow_disk(self, descriptor, size_mb, diskformat):
        vmdkfile.grow(descriptor, size_mb)  # the descriptor says its format

    def delete_disk(self, descriptor):
        sidecar.remove(descriptor)
        vmdkfile.delete(descriptor)

    def disk_info(self, descriptor):
        """(capacity bytes, allocated bytes)."""
        return vmdkfile.info(descriptor)

    def allocated_bytes_many(self, descriptors):
        """Space each disk takes (None when it is gone): one stat of each extent."""
        sizes = []
        for descriptor in descriptors:
            try:
                sizes.append(os.stat(descriptor[:-len(".vmdk")] + "-flat.vmdk").st_blocks * 512)
            except OSError:
                sizes.append(None)
        return sizes

    def supports_policies(self, datastore):
        """Policies are recorded with the volume on every local datastore."""
        return True

    def apply_policy(self, descriptor, name, content):
        """Record the policy in the volume's side-car (a local disk has no
        storage layer to give it to)."""
        meta = sidecar.load(descriptor)
        if meta is None:
            raise VmdkopsError(f"No metadata for {descriptor}")
        meta["storagePolicy"] = {"name": name, "content": content}
        sidecar.save(descriptor, meta)

    def read_metadata(self, descriptor):
        return sidecar.load(descriptor)

    def write_metadata(self, descriptor, meta, guard=None):
        return sidecar.save(descriptor, meta, guard)

    def volume_files(self, datastore):
        """(vmgroup uuid or None for the dockvols root, volume name, descriptor)
        of every volume descriptor on a datastore."""
        dockvols = os.path.join(datastore.path, DOCKVOLS)
        try:
            entries = sorted(os.scandir(dockvols), key=lambda e: e.name)
        except FileNotFoundError:
            return
        folders = [(None, dockvols, [e.name for e in entries if e.is_file(follow_symlinks=False)])]
        folders += [(e.name, e.path, None) for e in entries if e.is_dir(follow_symlinks=False)]
        for vmgroup_uuid, folder, names in folders:
            for name in sorted(names if names is not None else os.listdir(folder)):
                if name.endswith(".vmdk") and not _NOT_A_VOLUME.search(name):
                    yield vmgroup_uuid, name[:-len(".vmdk")], folder + os.sep + name

    def leftover_files(self):
        leftovers = []
        for ds in self.datastores():
            dockvols = os.path.join(ds.path, DOCKVOLS)
            try:
                folders = [dockvols] + [e.path for e in os.scandir(dockvols)
                                        if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                continue
            for folder in folders:
                names = set(os.listdir(folder))
                for name in sorted(names):
                    match = _LEFTOVER.match(name)
                    if match is None or not (match.group(3) or (
                            match.group(2) in (vmdkfile.EXTENT_SUFFIX, CLAIM_SUFFIX)
                            and match.group(1) + ".vmdk" not in names)):
                        continue
                    path = os.path.join(folder, name)
                    leftovers.append(Leftover(ds, match.group(1), path,
                                              os.path.join(folder, match.group(1) + ".vmdk"),
                                              vmdkfile.is_locked(path)))
        return leftovers

    def remove_leftover(self, leftover):
        if not vmdkfile.is_locked(leftover.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover.path)

    def volume_of(self, descriptor):
        folder, file_name = os.path.split(os.path.realpath(descriptor))
        for ds in self.datastores():
            dockvols = os.path.realpath(os.path.join(ds.path, DOCKVOLS))
            if folder == dockvols:
                return ds, None, file_name[:-len(".vmdk")]
            if os.path.dirname(folder) == dockvols:
                return ds, os.path.basename(folder), file_name[:-len(".vmdk")]
        return None, None, None
