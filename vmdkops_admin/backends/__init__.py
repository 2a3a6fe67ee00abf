"""The backend contract: the only code that knows what datastores and VMs
exist (and, later, that makes and attaches disks). ``local`` is the embedded
default; ``vsphere`` talks to ESX or vCenter."""

import abc
import contextlib
from dataclasses import dataclass
from typing import Optional

from ..errors import VmdkopsError

# Pseudo datastores of the access rules, with the URLs stored in the DB.
VM_DS = "_VM_DS"
ALL_DS = "_ALL_DS"
SPECIAL_DATASTORE_URLS = {VM_DS: "_VM_DS://", ALL_DS: "_ALL_DS://"}
SPECIAL_DATASTORE_NAMES = {url: name for name, url in SPECIAL_DATASTORE_URLS.items()}


@dataclass(frozen=True)
class Datastore:
    name: str
    url: str
    path: str
    type: str = "local"


@dataclass(frozen=True)
class Disk:
    """A volume's disk as a datastore listing shows it; ``capacity`` in bytes,
    None where the listing does not say; ``problem`` why the disk is not used
    (its files are not what the backend wrote: nothing is done with it)."""
    vmgroup_uuid: Optional[str]
    volume: str
    descriptor: str
    capacity: Optional[int]
    problem: Optional[str] = None


class AttachedElsewhere(VmdkopsError):
    """An attach refused because another VM has the disk; ``vm_name`` None
    when the backend knows no name for it (a VM gone from the inventory)."""

    def __init__(self, descriptor, vm_name, vm_uuid=None):
        super().__init__(f"Disk {descriptor} is attached to VM {vm_name or vm_uuid}")
        self.vm_name, self.vm_uuid = vm_name, vm_uuid


class NotFenced(VmdkopsError):
    """A VM that cannot be cut off a disk: its guest may still write to it."""


@dataclass(frozen=True)
class Leftover:
    """A file an interrupted create or remove left; ``busy`` while a live
    process still writes it (a create in progress)."""
    datastore: Datastore
    volume: str
    path: str
    descriptor: str
    busy: bool


@dataclass(frozen=True)
class VirtualMachine:
    name: str
    uuid: str
    datastore: str


class Unsupported(VmdkopsError):
    """What this backend does not do (``Backend.can`` says so beforehand)."""


class Backend(abc.ABC):
    """Everything code outside ``backends/`` asks of a backend. Lookups return
    ``None`` when nothing matches. A disk is named by its descriptor: a path
    the backend understands (a file of this host, or ``[ds] folder/file``).
    What only some backends do is a declared capability: ask ``can`` first;
    its methods raise ``Unsupported`` elsewhere."""

    name = "abstract"
    MANAGED_INVENTORY = "managed inventory"  # datastores and VMs are added and removed here
    POWER = "power"  # VMs are powered off and on here (``set_power``)
    POWER_WATCH = "power watch"  # tells when VMs power off (``watch_power_off``)
    capabilities = frozenset()

    def can(self, capability):
        return capability in self.capabilities

    def _unsupported(self, what):
        raise Unsupported(f"The {self.name} backend's {what}")

    # -- inventory --------------------------------------------------------------------

    @abc.abstractmethod
    def datastores(self):
        """Every ``Datastore``, sorted by name."""

    @abc.abstractmethod
    def vms(self):
        """Every ``VirtualMachine``."""

    def space(self, datastore):
        """(capacity MB, free MB) of a datastore; (None, None) when unknown."""
        return None, None

    def datastore_by_name(self, name):
        return next((ds for ds in self.datastores() if ds.name == name), None)

    def datastore_by_url(self, url):
        return next((ds for ds in self.datastores() if ds.url == url), None)

    def find_vm(self, name_or_uuid):
        """A VM by uuid (any case) or by name."""
        wanted = name_or_uuid.lower()
        vms = self.vms()
        return (next((vm for vm in vms if vm.uuid.lower() == wanted), None)
                or next((vm for vm in vms if vm.name == name_or_uuid), None))

    def server(self):
        """``host:port`` of the server the backend speaks to, or None (it speaks to none)."""
        return None

    def session_info(self):
        """{"server", "product", "user", "since", "tls"} of the backend's session with its server."""
        return self._unsupported("has no session")

    # MANAGED_INVENTORY

    def add_datastore(self, name, path):
        return self._unsupported("inventory is managed in vSphere")

    def remove_datastore(self, name):
        return self._unsupported("inventory is managed in vSphere")

    def add_vm(self, name, vm_uuid=None, datastore=None):
        return self._unsupported("inventory is managed in vSphere")

    def remove_vm(self, name):
        return self._unsupported("inventory is managed in vSphere")

    # POWER and POWER_WATCH

    def set_power(self, name, on):
        """Mark a VM powered on or off."""
        return self._unsupported("VMs are powered in vSphere: vmdk-opsd detaches the volumes of a "
                                 "VM that powers off")

    def watch_power_off(self, powered_off, stop):
        """Call ``powered_off([vm, ...])`` with the VMs that power off until ``stop`` is set."""
        return self._unsupported("VMs' power is not watched")

    def stop_watch(self):
        """End a running ``watch_power_off`` (its ``stop`` set first)."""

    def close(self):
        """Give up what the backend holds on its server (a vSphere session) at
        the end of a command or of the executor; a later call opens it again."""

    # -- volume folders and disks -------------------------------------------------------

    @abc.abstractmethod
    def vmgroup_dir(self, datastore, vmgroup_uuid, vmgroup_name, create=False):
        """The folder of a vmgroup's volumes on a datastore (made when ``create``)."""

    @abc.abstractmethod
    def descriptor(self, datastore, vmgroup_uuid, volume):
        """The descriptor of a volume's disk."""

    @abc.abstractmethod
    def volume_of(self, descriptor):
        """(datastore, vmgroup uuid or None, volume name) of a descriptor; the
        datastore is None when no datastore holds it."""

    @abc.abstractmethod
    def disk_exists(self, descriptor):
        pass

    @abc.abstractmethod
    def create_disk(self, descriptor, size_mb, diskformat, policy=None):
        """A new disk (FileExistsError when there is one); ``policy`` a storage policy name."""

    @abc.abstractmethod
    def clone_disk(self, source, target, diskformat):
        """A copy of a disk (FileExistsError when ``target`` exists)."""

    @abc.abstractmethod
    def grow_disk(self, descriptor, size_mb, diskformat):
        """Make a detached disk ``size_mb`` large (``diskformat`` says how the
        new part is allocated); a crash leaves the old size or the new one."""

    def check_disk(self, descriptor):
        """Raise (a ``VmdkopsError`` naming the volume) when the disk's files are
        not what the backend made, so that nothing is done with it; nothing
        to check where the storage layer owns the files (vSphere's)."""

    @abc.abstractmethod
    def delete_disk(self, descriptor):
        """Delete a disk and its side-car; nothing there is success."""

    @abc.abstractmethod
    def disk_info(self, descriptor):
        """(capacity bytes, allocated bytes) of a disk; NotFound when it is gone."""

    @abc.abstractmethod
    def allocated_bytes_many(self, descriptors):
        """The allocated bytes of each disk (None where it is gone), in few requests."""

    @abc.abstractmethod
    def disks(self, datastore):
        """The ``Disk`` of every volume on a datastore, from one listing."""

    def volume_files(self, datastore):
        """(vmgroup uuid or None, volume name, descriptor) of every volume on a datastore."""
        for disk in self.disks(datastore):
            yield disk.vmgroup_uuid, disk.volume, disk.descriptor

    @abc.abstractmethod
    def read_metadata(self, descriptor):
        """A volume's side-car (a dict), or None when it has none."""

    @abc.abstractmethod
    def write_metadata(self, descriptor, meta, guard=None):
        """Replace a side-car; with ``guard`` = (key, value) only if the side-car
        has no such key or has that value (False when it had another)."""

    def leftover_files(self):
        """Files in the datastores' volume folders that no volume explains (a
        temporary file, an extent without its descriptor), left by a create or
        remove that was interrupted: ``Leftover``s; none where the storage
        layer makes each disk in one step of its own (vSphere's tasks)."""
        return []

    def remove_leftover(self, leftover):
        """Remove a leftover file unless a live process has started writing it."""

    def shared_db_file(self, datastore):
        """The path on this host of the shared SQLite auth DB on ``datastore``
        (``dockvols/vmdkops_config.db``), or None where datastores are not
        directories of this host."""
        return None

    def vmgroup_renamed(self, vmgroup_uuid, old_name, new_name):
        """Move the ``dockvols/<name>`` links of a renamed vmgroup."""

    def vmgroup_removed(self, vmgroup_uuid, name):
        """Remove the ``dockvols`` folder and link of a vmgroup that has no volumes left."""

    def vmgroup_folder_moved(self, datastore, old_uuid, new_uuid, name):
        """Give the volumes in ``dockvols/<old_uuid>`` the folder of ``new_uuid``
        (and the ``name`` link): "moved", "exists" when the new folder is
        there already (nothing moves), or None when there is nothing to move."""
        return None

    # -- attachments ------------------------------------------------------------------

    @abc.abstractmethod
    def attach(self, vm, descriptor):
        """Attach to ``vm`` (the same VM again: its slot); the guest's
        {"Unit", "ControllerPciSlotNumber", "ControllerPciBusNumber", ...}."""

    @abc.abstractmethod
    def detach(self, vm, descriptor):
        """Detach from ``vm``, keeping the disk; not attached there is success."""

    @abc.abstractmethod
    def attached_to(self, descriptor):
        """(vm uuid, device info) of the VM that has the disk, or None."""

    @abc.abstractmethod
    def attached_disks(self, vm):
        """Descriptors of the volumes attached to ``vm``."""

    @abc.abstractmethod
    def attachments(self):
        """(vm uuid, descriptor, whether its device is there) of every attached volume."""

    @abc.abstractmethod
    def holders(self):
        """{descriptor: (vm uuid, device info)} of every attached volume disk,
        from one query."""

    @contextlib.contextmanager
    def fenced(self, vm, descriptor):
        """Before a silent VM's disk is taken from it: make sure the VM can
        no longer write to it, and keep it so while the block runs (which
        detaches it); ``NotFenced`` saying why when that cannot be made sure."""
        raise NotFenced(f"the {self.name} backend cannot cut a VM off a disk")
        yield

    def stray_devices(self):
        """(device, extent) of devices on a volume that no attachment records."""
        return []

    def release_device(self, device, extent):
        """Let go of a stray device."""

    # -- storage policies of the auth DB, as the backend applies them ------------------

    def supports_policies(self, datastore):
        return True

    @abc.abstractmethod
    def apply_policy(self, descriptor, name, content):
        """Give a volume a storage policy (recorded in its side-car at least)."""

    def policy_scope(self):
        """(kind, where it applies) of the auth DB's policies."""
        return "recorded", "every datastore (kept with the volume)"

    def external_policies(self):
        """(name, rules, made by us) of policies the storage layer holds itself."""
        return []

    def find_external_policy(self, name):
        return None

    def policy_created(self, name, content):
        """Give a new policy to the storage layer (nothing to do by default)."""

    def policy_updated(self, name, content):
        """New rules for a policy of the storage layer, before they reach its volumes."""

    def policy_removed(self, name):
        """Forget a policy in the storage layer."""


def pseudo_datastore(name):
    """``_VM_DS`` or ``_ALL_DS`` as a ``Datastore`` of the access rules."""
    return Datastore(name, SPECIAL_DATASTORE_URLS[name], "", "pseudo")


def datastore_names(backend):
    """A function from a stored URL to the datastore's current name ('' when it is gone)."""
    names = {ds.url: ds.name for ds in backend.datastores()}
    names.update(SPECIAL_DATASTORE_NAMES)
    return lambda url: names.get(url, "")


def get_backend():
    """The backend of this installation: ``vsphere`` when ``$VMDKOPS_HOME/vsphere.json``
    holds its settings, else ``local``; ``VMDKOPS_BACKEND`` (which ``vmdk-opsd
    --backend`` sets) chooses explicitly."""
    import os

    from ..paths import layout

    paths = layout()
    settings = os.path.join(paths.root, "vsphere.json")
    chosen = os.environ.get("VMDKOPS_BACKEND") or ("vsphere" if os.path.exists(settings) else "local")
    if chosen == "vsphere":
        from .vsphere import VsphereBackend, load_settings

        return VsphereBackend(load_settings(settings))
    if chosen != "local":
        raise VmdkopsError(f"Unknown backend {chosen}: local or vsphere")
    from .local import LocalBackend

    return LocalBackend(paths)
