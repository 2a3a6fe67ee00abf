"""The ``vsphere`` backend: pyvmomi against ESX or vCenter.

Datastores and VMs come from one PropertyCollector query each; disks are made,
copied and deleted with the VirtualDiskManager under ``[ds] dockvols/<vmgroup
uuid>/``; a volume's side-car is read and written through the datastore file
interface (``/folder``). Tasks are waited for by reading only ``info.state``,
``info.error`` and ``info.result`` (what works on ESX and on the simulator).

Settings (``$VMDKOPS_HOME/vsphere.json``): host, port, user, password_file
(or the environment variable VMDKOPS_VSPHERE_PASSWORD), ca_file, insecure.
The password never appears on a command line or in a log."""

import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.parse

from ..errors import NotFound, VmdkopsError
from . import Backend, Datastore, Disk, VirtualMachine, pvscsi

log = logging.getLogger("vmdkops.vsphere")

PASSWORD_ENV = "VMDKOPS_VSPHERE_PASSWORD"
DISK_TYPES = {"thin": "thin", "zeroedthick": "preallocated", "eagerzeroedthick": "eagerZeroedThick"}
TASK_TIMEOUT = 600
SESSION_CHECK = 30  # seconds between checks that the session is still alive
LISTING_TTL = 5  # seconds a datastore's disk listing serves allocated sizes
WATCH_WAIT = 2  # seconds each WaitForUpdatesEx may wait: how soon the watch sees its stop


class VsphereError(VmdkopsError):
    pass


def load_settings(path):
    try:
        with open(path) as f:
            settings = json.load(f)
    except (OSError, ValueError) as exc:
        raise VsphereError(f"Cannot read the vSphere settings {path}: {exc}") from None
    password = os.environ.get(PASSWORD_ENV)
    if password is None and settings.get("password_file"):
        try:
            with open(settings["password_file"]) as f:
                password = f.read().strip()
        except OSError as exc:
            raise VsphereError(f"Cannot read the password file: {exc.strerror}") from None
    settings["password"] = password or ""
    return settings


def split_path(datastore_path):
    """``[ds] folder/file`` -> (ds, folder/file)."""
    if not datastore_path.startswith("[") or "] " not in datastore_path:
        raise VsphereError(f"Not a datastore path: {datastore_path}")
    name, _, rest = datastore_path[1:].partition("] ")
    return name, rest


def _retried(method):
    """Run a backend method again, once, on a new session when vSphere says the
    session is gone (it expired, or an administrator ended it): a request that
    was not authenticated did nothing."""
    import functools

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        from pyVmomi import vim, vmodl

        try:
            return method(self, *args, **kwargs)
        except (vim.fault.NotAuthenticated, vmodl.fault.ManagedObjectNotFound) as exc:
            # A view of the session is gone with it (the simulator says so first).
            if isinstance(exc, vmodl.fault.ManagedObjectNotFound) and \
                    exc.obj not in list(self._views.values()):
                raise
            log.info("vSphere session lost; logging in again")
            self._expire()
            return method(self, *args, **kwargs)
    return run


class VsphereBackend(Backend):
    name = "vsphere"

    def __init__(self, settings):
        self.settings = settings
        self._si = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._views = {}
        self._datacenter_ref = None
        self._stores = {}  # name -> (datastore browser, capacity bytes, free bytes)
        self._listings = {}  # datastore name -> (time, {descriptor: (capacity, allocated)})
        # vSphere API round trips (SOAP calls and datastore file requests) of this backend.
        self.round_trips = 0
        # Capacity (MB) of disks made by this process, kept in their side-cars
        # too: the simulator's datastore browser reports no capacity.
        self._sizes = {}
        self._watching = None  # the property collector of a running power-state watch
        self._instances = {}  # instance uuid -> VM, from the last vms()
        self._vm_locks, self._vm_locks_guard = {}, threading.Lock()

    # -- the session ----------------------------------------------------------------

    def _ssl_context(self):
        if self.settings.get("insecure"):
            return ssl._create_unverified_context()  # explicitly asked for
        return ssl.create_default_context(cafile=self.settings.get("ca_file") or None)

    @property
    def si(self):
        """The service instance; the session is checked at most every
        SESSION_CHECK seconds and made again when it has expired."""
        from pyVmomi import vim

        with self._lock:
            if self._si is not None:
                if time.monotonic() - self._checked < SESSION_CHECK:
                    return self._si
                try:
                    if self._content.sessionManager.currentSession is not None:
                        self._checked = time.monotonic()
                        return self._si
                except (vim.fault.NotAuthenticated, OSError):
                    pass
            self._si = self._connect()
            self._content = self._si.RetrieveContent()
            self._checked = time.monotonic()
            # Objects of the old session would still speak through its stub.
            self._views, self._datacenter_ref, self._stores = {}, None, {}
            return self._si

    def _expire(self):
        with self._lock:
            self._si = None

    def _connect(self):
        from pyVim.connect import SmartConnect
        from pyVmomi import vim

        try:
            si = SmartConnect(
                host=self.settings["host"], port=int(self.settings.get("port", 443)),
                user=self.settings.get("user", ""), pwd=self.settings.get("password", ""),
                sslContext=self._ssl_context())
        except vim.fault.InvalidLogin:
            raise VsphereError(f"vSphere refused the login of {self.settings.get('user')} "
                               f"at {self.settings['host']}") from None
        except OSError as exc:
            raise VsphereError(f"Cannot reach vSphere at {self.settings['host']}: {exc}") from None
        self._count(si._stub)
        return si

    def _count(self, stub):
        """Count the round trips of a SOAP stub in ``round_trips``."""
        invoke = stub.InvokeMethod

        def counted(*args, **kwargs):
            self.round_trips += 1
            return invoke(*args, **kwargs)
        stub.InvokeMethod = counted

    @_retried
    def session_info(self):
        """What ``vmdkops_admin status`` shows of the vSphere session."""
        content = self.content
        session = content.sessionManager.currentSession
        about = content.about
        return {"server": f"{self.settings['host']}:{self.settings.get('port', 443)}",
                "product": f"{about.fullName} ({about.apiType})",
                "user": session.userName, "since": session.loginTime.isoformat(timespec="seconds"),
                "tls": "not verified (insecure)" if self.settings.get("insecure") else "verified"}

    @property
    def content(self):
        self.si  # noqa: B018 - connected, and the session checked
        return self._content

    @property
    def is_vcenter(self):
        return self.content.about.apiType == "VirtualCenter"

    def _datacenter(self):
        from pyVmomi import vim

        content = self.content
        if self._datacenter_ref is None:
            self._datacenter_ref = next(e for e in content.rootFolder.childEntity
                                        if isinstance(e, vim.Datacenter))
            self._datacenter_name = self._datacenter_ref.name
        return self._datacenter_ref

    def _retrieve(self, kind, paths):
        """(object, {path: value}) of every managed object of ``kind``, in one
        query through a container view kept for the session."""
        from pyVmomi import vmodl

        content = self.content
        view = self._views.get(kind)
        if view is None:
            view = self._views[kind] = content.viewManager.CreateContainerView(
                content.rootFolder, [kind], True)
        collector = vmodl.query.PropertyCollector
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[collector.TraversalSpec(
                name="view", path="view", skip=False, type=type(view))])],
            propSet=[collector.PropertySpec(type=kind, pathSet=list(paths))])
        return [(o.obj, {p.name: p.val for p in o.propSet})
                for o in content.propertyCollector.RetrieveContents([spec])]

    def wait(self, task):
        """The result of a task; a VsphereError with its fault message if it failed."""
        from pyVmomi import vim, vmodl

        collector = vmodl.query.PropertyCollector
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=task)],
            propSet=[collector.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error",
                                                                    "info.result"])])
        deadline = time.monotonic() + TASK_TIMEOUT
        delay = 0.005
        while True:
            [found] = self.content.propertyCollector.RetrieveContents([spec])
            info = {p.name: p.val for p in found.propSet}
            if info["info.state"] == "success":
                return info.get("info.result")
            if info["info.state"] == "error":
                raise TaskFailed(info.get("info.error"))
            if time.monotonic() > deadline:
                raise VsphereError("A vSphere task did not finish in time")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- inventory --------------------------------------------------------------------

    @_retried
    def datastores(self):
        from pyVmomi import vim

        stores, found = [], {}
        for store, props in self._retrieve(vim.Datastore, ("name", "browser", "summary.url", "summary.type",
                                                           "summary.capacity", "summary.freeSpace")):
            found[props["name"]] = (props["browser"], props.get("summary.capacity"),
                                    props.get("summary.freeSpace"))
            stores.append(Datastore(props["name"], props["summary.url"],
                                    f"[{props['name']}]", props["summary.type"].lower()))
        self._stores = found
        return sorted(stores, key=lambda ds: ds.name)

    def space(self, datastore):
        """(capacity MB, free MB) as vSphere reports them."""
        if datastore.name not in self._stores:
            self.datastores()
        _, capacity, free = self._stores.get(datastore.name, (None, None, None))
        return (None if capacity is None else capacity >> 20, None if free is None else free >> 20)

    @_retried
    def vms(self):
        from pyVmomi import vim

        machines, instances = [], {}
        for _, props in self._retrieve(vim.VirtualMachine, ("name", "config.uuid", "config.instanceUuid",
                                                            "config.files.vmPathName")):
            if "config.uuid" not in props:
                continue  # a VM being created has no config yet
            datastore = split_path(props.get("config.files.vmPathName", "[] "))[0]
            machines.append(VirtualMachine(props["name"], props["config.uuid"].lower(), datastore))
            if props.get("config.instanceUuid"):
                instances[props["config.instanceUuid"].lower()] = machines[-1]
        self._instances = instances
        return machines

    def find_vm(self, name_or_uuid):
        """A VM by BIOS uuid, instance uuid or name; a BIOS uuid two VMs share is refused."""
        wanted = name_or_uuid.lower()
        vms = self.vms()
        by_uuid = [vm for vm in vms if vm.uuid == wanted]
        if len(by_uuid) > 1:
            raise VsphereError(
                f"VMs {', '.join(vm.name for vm in by_uuid)} have the same BIOS uuid {wanted} "
                "(cloned VMs?); give each its own uuid before it uses volumes")
        return (by_uuid[0] if by_uuid else self._instances.get(wanted)
                or next((vm for vm in vms if vm.name == name_or_uuid), None))

    # -- volumes on a datastore ----------------------------------------------------------

    def vmgroup_dir(self, datastore, vmgroup_uuid, vmgroup_name, create=False):
        path = f"[{datastore.name}] dockvols/{vmgroup_uuid}"
        if create:
            self._make_directory(path)
        return path

    @_retried
    def _make_directory(self, path):
        from pyVmomi import vim

        try:
            self.content.fileManager.MakeDirectory(name=path, datacenter=self._datacenter(),
                                                  createParentDirectories=True)
        except vim.fault.FileAlreadyExists:
            pass

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

    @_retried
    def disk_exists(self, descriptor):
        folder, _, file_name = descriptor.rpartition("/")
        return any(file_name in files for _, files in self._search(folder, [file_name]))

    @_retried
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

    @_retried
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

    @_retried
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

    @_retried
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

    @_retried
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

    # -- storage policies: SPBM on vCenter, the vSAN text on a standalone host ---------------

    @property
    def spbm(self):
        from .spbm import Spbm

        if getattr(self, "_spbm", None) is None:
            self._spbm = Spbm(self)
        return self._spbm

    def supports_policies(self, datastore):
        """vCenter gives a profile to a disk on any datastore; a standalone
        host applies the vSAN text to vSAN objects only."""
        return self.is_vcenter or datastore.type == "vsan"

    def policy_scope(self):
        """(kind, where it applies) of the policies of the auth DB."""
        if self.is_vcenter:
            return "SPBM", f"vCenter {self.settings['host']}"
        vsan = [ds.name for ds in self.datastores() if ds.type == "vsan"]
        return "vSAN", f"vSAN datastores: {', '.join(vsan)}" if vsan else "no vSAN datastore"

    @_retried
    def external_policies(self):
        """(name, rules as text, ours) of every vCenter storage policy."""
        from .spbm import OURS, rules_text

        if not self.is_vcenter:
            return []
        return [(name, rules_text(p), p.description == OURS) for name, p in sorted(self.spbm.profiles().items())]

    def find_external_policy(self, name):
        """The rules of a vCenter storage policy the auth DB does not hold, or None."""
        return next((rules for found, rules, _ in self.external_policies() if found == name), None)

    def _vsan_policy_file(self, name):
        vsan = next((ds for ds in self.datastores() if ds.type == "vsan"), None)
        return None if vsan is None else f"[{vsan.name}] dockvols/policies/{name}"

    @_retried
    def policy_created(self, name, content):
        self._save_policy(name, content, lambda: self.spbm.create(name, content))

    @_retried
    def policy_updated(self, name, content):
        self._save_policy(name, content, lambda: self.spbm.update(name, content))

    def _save_policy(self, name, content, on_vcenter):
        """Give the (checked) vSAN text to vCenter (``on_vcenter``) or, on a
        standalone host, write it where the original kept it, for its tools."""
        if self.is_vcenter:
            on_vcenter()
            return
        path = self._vsan_policy_file(name)
        if path is not None:
            self._make_directory(path.rpartition("/")[0])
            self._put_file(path, (content + "\n").encode())

    @_retried
    def policy_removed(self, name):
        if self.is_vcenter:
            self.spbm.delete(name)
            return
        path = self._vsan_policy_file(name)
        if path is not None:
            self._file_request("DELETE", path)

    def _profile_spec(self, policy_name):
        from pyVmomi import vim

        return [vim.vm.DefinedProfileSpec(profileId=self.spbm.profile_id(policy_name))]

    @_retried
    def apply_policy(self, descriptor, name, content):
        """Record the policy in the side-car; on vCenter give the disk the
        profile now when a VM has it, else at its next attach."""
        from pyVmomi import vim

        meta = self.read_metadata(descriptor)
        if meta is None:
            raise VsphereError(f"No metadata for {descriptor}")
        meta["storagePolicy"] = {"name": name, "content": content}
        self.write_metadata(descriptor, meta)
        if not self.is_vcenter:
            return
        holder = self.attached_to(descriptor)
        if holder is None:
            return
        vm = self._vm_object(next(v for v in self.vms() if v.uuid == holder[0]))
        disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)
                    and getattr(d.backing, "fileName", None) == descriptor)
        change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.edit,
                                                 device=disk, profile=self._profile_spec(name))
        try:
            with self._vm_lock(holder[0]):
                self._reconfigure(vm, change)
        except TaskFailed as exc:
            raise VsphereError(f"Failed to apply policy {name} to {descriptor}: {exc}") from None

    def volume_of(self, descriptor):
        """(datastore, volume name) of ``[ds] dockvols/<uuid>/<vol>.vmdk``."""
        name, path = split_path(descriptor)
        return self.datastore_by_name(name), path.rpartition("/")[2][:-len(".vmdk")]

    def disks(self, datastore):
        root = f"[{datastore.name}] dockvols"
        found = []
        for descriptor, (capacity, _) in sorted(self._listing(datastore.name, fresh=True).items()):
            folder, _, name = descriptor.rpartition("/")
            vmgroup_uuid = None if folder == root else folder[len(root) + 1:].split("/")[0]
            found.append(Disk(vmgroup_uuid, name[:-len(".vmdk")], descriptor, capacity))
        return found

    def volume_files(self, datastore):
        for disk in self.disks(datastore):
            yield disk.vmgroup_uuid, disk.volume, disk.descriptor

    # -- attach and detach: ReconfigVM_Task on ParaVirtual SCSI controllers ---------------------

    def _vm_lock(self, vm_uuid):
        """The lock that makes the reconfigures of one VM run one at a time here."""
        with self._vm_locks_guard:
            return self._vm_locks.setdefault(vm_uuid, threading.Lock())

    def _reconfigure(self, target, *changes):
        """Reconfigure a VM's devices; while another client's task holds the VM
        (TaskInProgress), try again for up to a minute."""
        from pyVmomi import vim

        deadline = time.monotonic() + 60
        while True:
            try:
                return self.wait(target.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=list(changes))))
            except TaskFailed as exc:
                if not exc.is_a("TaskInProgress") or time.monotonic() > deadline:
                    raise
            except vim.fault.TaskInProgress:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def _vm_object(self, vm):
        found = self.content.searchIndex.FindByUuid(None, vm.uuid, True, False)
        if found is None:
            raise NotFound(f"Failed to find VM object for {vm.name} (bios {vm.uuid})")
        return found

    def _disks_of_all_vms(self):
        """(vm uuid, disk device, controller, extraConfig) of every disk of every VM, in one query."""
        from pyVmomi import vim

        for _, props in self._retrieve(vim.VirtualMachine, ("config.uuid", "config.hardware.device",
                                                            "config.extraConfig")):
            devices = props.get("config.hardware.device") or []
            controllers = {d.key: d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)}
            for device in devices:
                if isinstance(device, vim.vm.device.VirtualDisk):
                    yield (props.get("config.uuid", "").lower(), device,
                           controllers.get(device.controllerKey), props.get("config.extraConfig"))

    def _reply(self, device, controller, extra_config):
        slot, bus = _pci(controller, extra_config) if controller is not None else ("", "")
        return {"Unit": str(device.unitNumber), "ControllerPciSlotNumber": slot,
                "ControllerPciBusNumber": bus,
                "DiskUuid": getattr(device.backing, "uuid", None) or ""}

    @_retried
    def attached_to(self, descriptor):
        for vm_uuid, device, controller, extra in self._disks_of_all_vms():
            if getattr(device.backing, "fileName", None) == descriptor:
                return vm_uuid, self._reply(device, controller, extra)
        return None

    @_retried
    def attachments(self):
        """(vm uuid, descriptor, True) of every volume attached to a VM: the VMs'
        devices are the truth here, so a device is never "gone"."""
        return [(vm_uuid, device.backing.fileName, True)
                for vm_uuid, device, _, _ in self._disks_of_all_vms()
                if "] dockvols/" in getattr(device.backing, "fileName", "")]

    @_retried
    def holders(self):
        return {device.backing.fileName: (vm_uuid, self._reply(device, controller, extra))
                for vm_uuid, device, controller, extra in self._disks_of_all_vms()
                if "] dockvols/" in getattr(device.backing, "fileName", "")}

    def stray_devices(self):
        return []

    @_retried
    def attached_disks(self, vm):
        return [device.backing.fileName for vm_uuid, device, _, _ in self._disks_of_all_vms()
                if vm_uuid == vm.uuid and "] dockvols/" in getattr(device.backing, "fileName", "")]

    @_retried
    def attach(self, vm, descriptor):
        """Attach on the lowest free unit of the first PVSCSI controller with
        room, adding a controller when all are full; a disk another VM has is
        refused before any reconfigure (ESX would fail late, on its lock)."""
        with self._vm_lock(vm.uuid):
            return self._attach(vm, descriptor)

    def _attach(self, vm, descriptor):
        from pyVmomi import vim

        holder = self.attached_to(descriptor)
        if holder is not None:
            if holder[0] == vm.uuid:
                return holder[1]
            other = next((v.name for v in self.vms() if v.uuid == holder[0]), holder[0])
            raise VsphereError(f"Disk {descriptor} is attached to VM {other}")
        meta = self.read_metadata(descriptor) or {}
        mode = (meta.get("volOpts") or {}).get("attach-as", "independent_persistent")
        target = self._vm_object(vm)
        devices = target.config.hardware.device
        controllers = [d for d in devices if isinstance(d, vim.vm.device.VirtualSCSIController)]
        used = {c.busNumber: {d.unitNumber for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
                              and d.controllerKey == c.key}
                for c in controllers if isinstance(c, vim.vm.device.ParaVirtualSCSIController)}
        bus, unit, new = pvscsi.place(used, [c.busNumber for c in controllers])
        if new:
            add = vim.vm.device.VirtualDeviceSpec(
                operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
                device=vim.vm.device.ParaVirtualSCSIController(key=-100 - bus, busNumber=bus,
                                                                sharedBus="noSharing"))
            self._reconfigure(target, add)
            devices = target.config.hardware.device
        controller = next(d for d in devices if isinstance(d, vim.vm.device.ParaVirtualSCSIController)
                          and d.busNumber == bus)
        disk = vim.vm.device.VirtualDisk(
            key=-1, controllerKey=controller.key, unitNumber=unit,
            backing=vim.vm.device.VirtualDisk.FlatVer2BackingInfo(fileName=descriptor, diskMode=mode),
            deviceInfo=vim.Description(label="dockerDataVolume", summary="dockerDataVolume"))
        change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.add,
                                                 device=disk)
        policy = (meta.get("storagePolicy") or {}).get("name")
        if policy is not None and self.is_vcenter:
            change.profile = self._profile_spec(policy)  # the policy's current rules
        try:
            self._reconfigure(target, change)
        except TaskFailed as exc:
            raise VsphereError(f"Failed to attach {descriptor}: {exc}") from None
        found = self.attached_to(descriptor)
        if found is None:
            raise VsphereError(f"Failed to attach {descriptor}: the disk did not appear on VM {vm.name}")
        return found[1]

    @_retried
    def detach(self, vm, descriptor):
        """Remove the disk from the VM, keeping its file; not attached there is success."""
        with self._vm_lock(vm.uuid):
            self._detach(vm, descriptor)

    def _detach(self, vm, descriptor):
        from pyVmomi import vim

        target = self._vm_object(vm)
        for device in target.config.hardware.device:
            if isinstance(device, vim.vm.device.VirtualDisk) and \
                    getattr(device.backing, "fileName", None) == descriptor:
                change = vim.vm.device.VirtualDeviceSpec(
                    operation=vim.vm.device.VirtualDeviceSpec.Operation.remove, device=device)
                try:
                    self._reconfigure(target, change)
                except TaskFailed as exc:
                    raise VsphereError(f"Failed to detach {descriptor}: {exc}") from None

    # -- power state: a VM that powers off gives its volumes back ------------------------------

    def watch_power_off(self, powered_off, stop):
        """Call ``powered_off([vm, ...])`` with the VMs that powered off, one
        call per update, until ``stop`` is set: WaitForUpdatesEx on
        ``runtime.powerState`` through a property collector of its own. VMs
        already off when the watch starts are reported too (they may have
        powered off while no one watched). A lost session or connection is made
        again, waiting longer each time."""
        delay = 1
        while not stop.is_set():
            try:
                self._watch(powered_off, stop)
                return
            except Exception as exc:  # noqa: BLE001 - the watch outlives vSphere's outages
                log.warning("power-state watch interrupted (%s); again in %d s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 60)
                with self._lock:
                    self._checked = 0.0  # check the session before the next attempt

    def _watch(self, powered_off, stop):
        from pyVmomi import vim, vmodl

        content = self.content
        collector = content.propertyCollector.CreatePropertyCollector()
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        pc = vmodl.query.PropertyCollector
        collector.CreateFilter(pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                name="view", path="view", skip=False, type=vim.view.ContainerView)])],
            propSet=[pc.PropertySpec(type=vim.VirtualMachine,
                                     pathSet=["name", "config.uuid", "runtime.powerState"])]),
            partialUpdates=True)
        known, version = {}, ""
        self._watching = collector
        try:
            while not stop.is_set():
                update = collector.WaitForUpdatesEx(version, pc.WaitOptions(maxWaitSeconds=WATCH_WAIT))
                if update is None:
                    continue
                version = update.version
                off = []
                for found in (o for f in update.filterSet or [] for o in f.objectSet or []):
                    if found.kind == "leave":
                        known.pop(found.obj._moId, None)
                        continue
                    props = known.setdefault(found.obj._moId, {})
                    props.update({c.name: c.val for c in found.changeSet or []})
                    changed = {c.name for c in found.changeSet or []}
                    if "runtime.powerState" in changed and props["runtime.powerState"] == "poweredOff" \
                            and props.get("config.uuid"):
                        off.append(VirtualMachine(props["name"], props["config.uuid"].lower(), ""))
                if off:
                    powered_off(off)
        except vmodl.fault.RequestCanceled:
            if not stop.is_set():
                raise
        finally:
            self._watching = None
            try:
                collector.DestroyPropertyCollector()
                view.Destroy()
            except Exception:  # noqa: BLE001 - the session may be gone already
                pass

    def stop_watch(self):
        """End a power-state watch's pending wait (its ``stop`` must be set first)."""
        collector = self._watching
        if collector is not None:
            try:
                collector.CancelWaitForUpdates()
            except Exception:  # noqa: BLE001 - it ends at its next wait anyway
                pass

    # -- side-cars through the datastore file interface ---------------------------------------

    def _file_request(self, method, datastore_path, body=None, retry=False):
        datastore_name, path = split_path(datastore_path)
        self._datacenter()
        query = urllib.parse.urlencode({"dcPath": self._datacenter_name, "dsName": datastore_name})
        connection = http.client.HTTPSConnection(self.settings["host"], int(self.settings.get("port", 443)),
                                                 context=self._ssl_context(), timeout=60)
        try:
            connection.request(method, f"/folder/{urllib.parse.quote(path)}?{query}", body=body,
                               headers={"Cookie": self.si._stub.cookie,
                                        "Content-Type": "application/octet-stream"})
            self.round_trips += 1
            response = connection.getresponse()
            status, answer = response.status, response.read()
        finally:
            connection.close()
        if status in (401, 403) and not retry:
            self._expire()  # the session is gone: log in again, once
            return self._file_request(method, datastore_path, body, retry=True)
        return status, answer

    @_retried
    def read_metadata(self, descriptor):
        status, body = self._file_request("GET", sidecar_path(descriptor))
        if status != 200:
            return None
        try:
            meta = json.loads(body)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None

    @_retried
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

    def _put_file(self, datastore_path, body, what=None):
        status, _ = self._file_request("PUT", datastore_path, body)
        if status not in (200, 201, 204):
            raise VsphereError(f"Failed to write {what or datastore_path}: HTTP {status}")


def _pci(controller, extra_config):
    """The controller's PCI slot and the bus the guest sees it on (spec
    esx-service §8.1): the slot from slotInfo or ``scsi<n>.pciSlotNumber``, then
    up the PCI bridges (``pciBridge<n>.pciSlotNumber``) to the root slot."""
    config = {o.key.lower(): str(o.value) for o in extra_config or []}
    slot = getattr(getattr(controller, "slotInfo", None), "pciSlotNumber", None)
    if slot is None:
        slot = config.get(f"scsi{controller.key - 1000}.pcislotnumber")
    if slot is None:
        return "", ""
    slot = root = int(slot)
    bus, func = (root >> 5) & 31, (root >> 10) & 7
    while bus > 0:
        parent = config.get(f"pcibridge{bus - 1}.pcislotnumber")
        if parent is None:
            break
        root = int(parent)
        bus = (root >> 5) & 31
    return str(slot), f"{root:x}.{func}"


def sidecar_path(descriptor):
    return descriptor[:-len(".vmdk")] + ".vmfd"


class TaskFailed(VsphereError):
    def __init__(self, fault):
        self.fault = fault
        message = getattr(fault, "msg", None) or getattr(fault, "faultMessage", None) or type(fault).__name__
        super().__init__(str(message))

    def is_a(self, name):
        return type(self.fault).__name__.endswith(name)
