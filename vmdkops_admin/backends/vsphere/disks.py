"""Disks and their side-cars under ``[ds] dockvols/<vmgroup uuid>/``: made,
copied and deleted with the VirtualDiskManager, listed with one
datastore-browser search per datastore; a side-car is read and written
through the datastore file interface."""

import json
import time

from ...errors import NotFound
from .. import Disk
from .session import TaskFailed, VsphereError, retried, split_path

DISK_TYPES = {"thin": "thin", "zeroedthick": "preallocated", "eagerzeroedthick": "eagerZeroedThick"}
LISTING_TTL = 5  # seconds a datastore's disk listing serves allocated sizes


class Disks:
    def vmgroup_dir(self, datastore, vmgroup_uuid, vmgroup_name, create=False):
        path = f"[{datastore.name}] dockvols/{vmgroup_uuid}"
        if create:
            self._make_directory(path)
        return path

    @retried
    def _make_directory(self, path):
        from pyVmomi import vim

        try:
            self.content.fileManager.MakeDirectory(name=path, datacenter=self._datacenter(),
                                                  createParentDirectories=True)
        except vim.fault.FileAlreadyExists:
            pass

    @retried
    def vmgroup_folder_moved(self, datastore, old_uuid, new_uuid, name):
        """The folder moves in one MoveDatastoreFile_Task (no ``name`` link: a
        datastore's links are made on ESX itself)."""
        root = f"[{datastore.name}] dockvols"
        if not self._search(f"{root}/{old_uuid}", ["*"]):
            return None
        if self._search(f"{root}/{new_uuid}", ["*"]):
            return "exists"
        datacenter = self._datacenter()
        self.wait(self.content.fileManager.MoveDatastoreFile_Task(
            sourceName=f"{root}/{old_uuid}", sourceDatacenter=datacenter,
            destinationName=f"{root}/{new_uuid}", destinationDatacenter=datacenter, force=False))
        self._listings.pop(datastore.name, None)
        return "moved"

    def descriptor(self, datastore, vmgroup_uuid, volume):
        return f"[{datastore.name}] dockvols/{vmgroup_uuid}/{volume}.vmdk"

    def _browser(self, datastore_path):
        name, _ = split_path(datastore_path)
        if name not in self._stores:
            self.datastores()
        if name not in self._stores:
            raise NotFound(f"Datastore {name} does not exist")
        return self._stores[name][0]

    def _search(self, folder, patterns):
        """(folder path, [file names]) under a datastore folder; [] when it does not exist."""
        from pyVmomi import vim

        browser = self._browser(folder)
        spec = vim.host.DatastoreBrowser.SearchSpec(
            query=[vim.host.DatastoreBrowser.Query()], matchPattern=list(patterns),
            details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True))
        try:
            results = self.wait(browser.SearchDatastoreSubFolders_Task(datastorePath=folder,
                                                                       searchSpec=spec))
        except TaskFailed as exc:
            if exc.is_a("FileNotFound"):
                return []
            raise
        return [(r.folderPath.rstrip("/"), [f.path for f in r.file or []]) for r in results or []]

    @retried
    def disk_exists(self, descriptor):
        folder, _, file_name = descriptor.rpartition("/")
        return any(file_name in files for _, files in self._search(folder, [file_name]))

    @retried
    def create_disk(self, descriptor, size_mb, diskformat, policy=None):
        """A new disk; on vCenter with the storage profile of ``policy`` (a name)."""
        from pyVmomi import vim

        spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
            adapterType="lsiLogic", diskType=DISK_TYPES[diskformat], capacityKb=size_mb * 1024)
        if policy is not None and self.is_vcenter:
            spec.profile = self._profile_spec(policy)
        try:
            self.wait(self.content.virtualDiskManager.CreateVirtualDisk_Task(
                name=descriptor, datacenter=self._datacenter(), spec=spec))
        except TaskFailed as exc:
            if exc.is_a("FileAlreadyExists"):
                raise FileExistsError(descriptor) from None
            raise VsphereError(f"Failed to create volume: {exc}") from None
        self._sizes[descriptor] = size_mb
        self._listings.pop(split_path(descriptor)[0], None)

    @retried
    def clone_disk(self, source, target, diskformat):
        from pyVmomi import vim

        capacity = self.disk_info(source)[0]
        spec = vim.VirtualDiskManager.FileBackedVirtualDiskSpec(
            adapterType="lsiLogic", diskType=DISK_TYPES[diskformat], capacityKb=capacity // 1024)
        datacenter = self._datacenter()
        copy = self.content.virtualDiskManager.CopyVirtualDisk_Task
        try:
            try:
                self.wait(copy(sourceName=source, sourceDatacenter=datacenter, destName=target,
                               destDatacenter=datacenter, destSpec=spec))
            except TaskFailed as exc:
                if not exc.is_a("NotImplemented"):
                    raise
                # The simulator copies only without a destination spec.
                self.wait(copy(sourceName=source, sourceDatacenter=datacenter, destName=target,
                               destDatacenter=datacenter))
        except TaskFailed as exc:
            if exc.is_a("FileAlreadyExists"):
                raise FileExistsError(target) from None
            raise VsphereError(f"Failed to clone volume: {exc}") from None
        self._sizes[target] = capacity >> 20
        self._listings.pop(split_path(target)[0], None)

    @retried
    def grow_disk(self, descriptor, size_mb, diskformat):
        """ExtendVirtualDisk_Task (not in the simulator: it says so, and nothing changes)."""
        from pyVmomi import vmodl

        try:
            self.wait(self.content.virtualDiskManager.ExtendVirtualDisk_Task(
                name=descriptor, datacenter=self._datacenter(), newCapacityKb=size_mb * 1024,
                eagerZero=diskformat == "eagerzeroedthick"))
        except (TaskFailed, vmodl.MethodFault) as exc:
            message = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
            raise VsphereError(f"Failed to extend volume: {message}") from None
        self._sizes[descriptor] = size_mb
        self._listings.pop(split_path(descriptor)[0], None)

    @retried
    def delete_disk(self, descriptor):
        datacenter = self._datacenter()
        self._listings.pop(split_path(descriptor)[0], None)
        for run in (lambda: self.content.fileManager.DeleteDatastoreFile_Task(
                        name=sidecar_path(descriptor), datacenter=datacenter),
                    lambda: self.content.virtualDiskManager.DeleteVirtualDisk_Task(
                        name=descriptor, datacenter=datacenter)):
            try:
                self.wait(run())
            except TaskFailed as exc:
                if not exc.is_a("FileNotFound"):
                    raise VsphereError(f"Failed to remove volume: {exc}") from None

    @retried
    def disk_info(self, descriptor):
        """(capacity bytes, allocated bytes) from the datastore browser; the
        side-car's recorded size where the browser has none (the simulator)."""
        from pyVmomi import vim

        folder, _, file_name = descriptor.rpartition("/")
        browser = self._browser(descriptor)
        spec = vim.host.DatastoreBrowser.SearchSpec(
            query=[vim.host.DatastoreBrowser.VmDiskQuery(
                details=vim.host.DatastoreBrowser.VmDiskQuery.Details(capacityKb=True))],
            matchPattern=[file_name], details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True))
        result = self.wait(browser.SearchDatastore_Task(datastorePath=folder, searchSpec=spec))
        found = next((f for f in (result.file or []) if f.path == file_name), None) if result else None
        if found is None:
            raise NotFound(f"Volume {file_name[:-5]} not found (file: {descriptor})")
        capacity = (getattr(found, "capacityKb", None) or 0) * 1024
        if not capacity:
            meta = self.read_metadata(descriptor) or {}
            capacity = int(meta.get("capacityMB") or self._sizes.get(descriptor, 0)) << 20
        return capacity, getattr(found, "fileSize", None) or 0

    @retried
    def _listing(self, datastore_name, fresh=False):
        """{descriptor: (capacity bytes or None, allocated bytes)} of every disk under
        ``[ds] dockvols``, from one datastore-browser search (kept LISTING_TTL seconds)."""
        from pyVmomi import vim

        cached = self._listings.get(datastore_name)
        if cached is not None and not fresh and time.monotonic() - cached[0] < LISTING_TTL:
            return cached[1]
        root = f"[{datastore_name}] dockvols"
        spec = vim.host.DatastoreBrowser.SearchSpec(
            query=[vim.host.DatastoreBrowser.VmDiskQuery(
                details=vim.host.DatastoreBrowser.VmDiskQuery.Details(capacityKb=True))],
            matchPattern=["*.vmdk"], details=vim.host.DatastoreBrowser.FileInfo.Details(fileSize=True))
        browser = self._browser(root)
        try:
            results = self.wait(browser.SearchDatastoreSubFolders_Task(datastorePath=root,
                                                                       searchSpec=spec))
        except TaskFailed as exc:
            if not exc.is_a("FileNotFound"):
                raise
            results = []
        disks = {}
        for result in results or []:
            folder = result.folderPath.rstrip("/")
            for found in result.file or []:
                if found.path.endswith(".vmdk") and not found.path.endswith("-flat.vmdk"):
                    capacity = getattr(found, "capacityKb", None)
                    disks[f"{folder}/{found.path}"] = (capacity * 1024 if capacity else None,
                                                       getattr(found, "fileSize", None) or 0)
        self._listings[datastore_name] = (time.monotonic(), disks)
        return disks

    def allocated_bytes_many(self, descriptors):
        """Allocated size of each disk (None when it is gone): one search per datastore."""
        sizes = []
        for descriptor in descriptors:
            found = self._listing(split_path(descriptor)[0]).get(descriptor)
            sizes.append(None if found is None else found[1])
        return sizes

    def volume_of(self, descriptor):
        name, path = split_path(descriptor)
        folder, _, file_name = path.rpartition("/")
        vmgroup_uuid = folder.rpartition("/")[2] if folder != "dockvols" else None
        return self.datastore_by_name(name), vmgroup_uuid, file_name[:-len(".vmdk")]

    def disks(self, datastore):
        root = f"[{datastore.name}] dockvols"
        found = []
        for descriptor, (capacity, _) in sorted(self._listing(datastore.name, fresh=True).items()):
            folder, _, name = descriptor.rpartition("/")
            vmgroup_uuid = None if folder == root else folder[len(root) + 1:].split("/")[0]
            found.append(Disk(vmgroup_uuid, name[:-len(".vmdk")], descriptor, capacity))
        return found

    @retried
    def read_metadata(self, descriptor):
        status, body = self._file_request("GET", sidecar_path(descriptor))
        if status != 200:
            return None
        try:
            meta = json.loads(body)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None

    @retried
    def write_metadata(self, descriptor, meta, guard=None):
        if guard is not None:
            key, value = guard
            current = self.read_metadata(descriptor) or {}
            if key in current and current[key] != value:
                return False
        if descriptor in self._sizes and "capacityMB" not in meta:
            meta = dict(meta, capacityMB=self._sizes[descriptor])
        self._put_file(sidecar_path(descriptor), json.dumps(meta).encode(), f"the metadata of {descriptor}")
        return True


def sidecar_path(descriptor):
    return descriptor[:-len(".vmdk")] + ".vmfd"
