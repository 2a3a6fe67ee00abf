"""The backend contract: the only code that knows what datastores and VMs
exist (and, later, that makes and attaches disks). ``local`` is the embedded
default; ``vsphere`` talks to ESX or vCenter."""

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
    None where the listing does not say."""
    vmgroup_uuid: Optional[str]
    volume: str
    descriptor: str
    capacity: Optional[int]


class AttachedElsewhere(VmdkopsError):
    """An attach lost to another VM that has the disk (found late: another
    host sharing the datastore attached it first)."""

    def __init__(self, descriptor, vm_name):
        super().__init__(f"Disk {descriptor} is attached to VM {vm_name}")
        self.vm_name = vm_name


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


class Backend:
    """Inventory part of the contract. Lookups return ``None`` when nothing matches."""

    name = "abstract"

    def datastores(self):
        raise NotImplementedError

    def vms(self):
        raise NotImplementedError

    def space(self, datastore):
        """(capacity MB, free MB) of a datastore; (None, None) when unknown."""
        import os

        try:
            st = os.statvfs(datastore.path)
        except OSError:
            return None, None
        return st.f_blocks * st.f_frsize >> 20, st.f_bavail * st.f_frsize >> 20

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

    # Storage policies of the auth DB, as the backend applies them.

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

    def disks(self, datastore):
        """The ``Disk`` of every volume on a datastore, from one listing."""
        raise NotImplementedError

    def holders(self):
        """{descriptor: (vm uuid, device info)} of every attached volume disk,
        from one query."""
        raise NotImplementedError

    def shared_db_file(self, datastore):
        """The path on this host of the shared SQLite auth DB on ``datastore``
        (``dockvols/vmdkops_config.db``), or None where datastores are not
        directories of this host."""
        return None

    def leftover_files(self):
        """Files in the datastores' volume folders that no volume explains (a
        temporary file, an extent without its descriptor), left by a create or
        remove that was interrupted: ``Leftover``s. None where the storage
        layer makes each disk in one step of its own (vSphere's tasks)."""
        return []

    def remove_leftover(self, leftover):
        """Remove a leftover file unless a live process has started writing it."""

    def vmgroup_renamed(self, vmgroup_uuid, old_name, new_name):
        """Move the ``dockvols/<name>`` links of a renamed vmgroup."""

    def vmgroup_removed(self, vmgroup_uuid, name):
        """Remove the ``dockvols`` folder and link of a vmgroup that has no volumes left."""


def datastore_url(backend, name):
    """The URL stored in the DB for a datastore name (or pseudo name)."""
    if name in SPECIAL_DATASTORE_URLS:
        return SPECIAL_DATASTORE_URLS[name]
    datastore = backend.datastore_by_name(name)
    return datastore.url if datastore else None


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
