"""The embedded ``local`` backend. Datastores are directories and VMs are the
Docker hosts of this machine, kept in an inventory file under the state root.
On first use the inventory registers this machine as a VM whose home is the
datastore ``datastore1`` (a directory under the state root)."""

import contextlib
import fcntl
import json
import os
import re
import socket
import uuid as uuidlib

from ..errors import AlreadyExists, InvalidArgument, NotFound
from ..paths import DOCKVOLS
from . import Backend, Datastore, VirtualMachine

DEFAULT_DATASTORE = "datastore1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def datastore_url_for(path):
    """A datastore's identity: its real path, in the form vSphere gives URLs."""
    return "ds://" + os.path.realpath(path).rstrip("/") + "/"


def validate_datastore_name(name):
    if not name or len(name) > 100:
        raise InvalidArgument(f"Datastore name '{name}' must have 1 to 100 characters")
    if name.startswith("_") or name in (".", "..") or _CONTROL.search(name) \
            or any(c in name for c in "/\\@"):
        raise InvalidArgument(
            f"Datastore name '{name}' is invalid: it may not start with '_', be '.' or '..', "
            "or contain '/', '\\', '@' or control characters")


def validate_vm_name(name):
    if not name or len(name) > 80 or "," in name or _CONTROL.search(name):
        raise InvalidArgument(
            f"VM name '{name}' is invalid: it needs 1 to 80 characters, without ',' "
            "or control characters")


def canonical_uuid(text):
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise InvalidArgument(f"'{text}' is not a valid UUID") from None


def this_machine_uuid():
    """This machine's BIOS uuid where the kernel shows it, else one derived
    from the machine id, else a new random one."""
    for path, parse in (("/sys/class/dmi/id/product_uuid", str.strip),
                        ("/etc/machine-id", lambda text: text.strip()[:32])):
        try:
            with open(path) as f:
                return str(uuidlib.UUID(parse(f.read())))
        except (OSError, ValueError):
            continue
    return str(uuidlib.uuid4())


class LocalBackend(Backend):
    name = "local"

    def __init__(self, layout):
        self.layout = layout
        self._inventory = None

    # -- inventory file ---------------------------------------------------

    def _load(self):
        if self._inventory is None:
            try:
                with open(self.layout.inventory) as f:
                    self._inventory = json.load(f)
            except FileNotFoundError:
                with self._edit() as inventory:
                    self._inventory = inventory
        return self._inventory

    def _first_inventory(self):
        path = os.path.join(self.layout.datastores, DEFAULT_DATASTORE)
        os.makedirs(path, exist_ok=True)
        return {
            "datastores": [{"name": DEFAULT_DATASTORE, "path": path, "url": datastore_url_for(path)}],
            "vms": [{"name": socket.gethostname(), "uuid": this_machine_uuid(),
                     "datastore": DEFAULT_DATASTORE}],
        }

    @contextlib.contextmanager
    def _edit(self):
        """Read-modify-write of the inventory under a lock, replaced atomically."""
        os.makedirs(self.layout.root, exist_ok=True)
        with open(self.layout.inventory + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(self.layout.inventory) as f:
                    inventory = json.load(f)
            except FileNotFoundError:
                inventory = self._first_inventory()
            yield inventory
            tmp = f"{self.layout.inventory}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                json.dump(inventory, f, indent=2)
                f.write("\n")
            os.replace(tmp, self.layout.inventory)
            self._inventory = inventory

    # -- the contract ---------------------------------------------------------

    def datastores(self):
        return [Datastore(d["name"], d["url"], d["path"]) for d in self._load()["datastores"]]

    def vms(self):
        return [VirtualMachine(v["name"], v["uuid"], v["datastore"]) for v in self._load()["vms"]]

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

    # -- managing the inventory (``vmdkops_admin host ...``) ------------------

    def add_datastore(self, name, path):
        validate_datastore_name(name)
        if not os.path.isdir(path):
            raise NotFound(f"Directory {path} does not exist")
        url = datastore_url_for(path)
        with self._edit() as inventory:
            for ds in inventory["datastores"]:
                if ds["name"] == name:
                    raise AlreadyExists(f"Datastore {name} already exists")
                if ds["url"] == url:
                    raise AlreadyExists(f"Directory {path} is already datastore {ds['name']}")
            inventory["datastores"].append(
                {"name": name, "path": os.path.realpath(path), "url": url})
        return Datastore(name, url, os.path.realpath(path))

    def remove_datastore(self, name):
        with self._edit() as inventory:
            if not any(ds["name"] == name for ds in inventory["datastores"]):
                raise NotFound(f"Datastore {name} does not exist")
            homes = [vm["name"] for vm in inventory["vms"] if vm["datastore"] == name]
            if homes:
                raise InvalidArgument(
                    f"Datastore {name} is the home datastore of VM(s) {','.join(homes)}; "
                    "remove or move them first")
            inventory["datastores"] = [ds for ds in inventory["datastores"] if ds["name"] != name]

    def add_vm(self, name, vm_uuid=None, datastore=None):
        validate_vm_name(name)
        vm_uuid = canonical_uuid(vm_uuid) if vm_uuid else str(uuidlib.uuid4())
        with self._edit() as inventory:
            names = [ds["name"] for ds in inventory["datastores"]]
            datastore = datastore or (DEFAULT_DATASTORE if DEFAULT_DATASTORE in names else None)
            if datastore not in names:
                raise NotFound(f"Datastore {datastore} does not exist")
            for vm in inventory["vms"]:
                if vm["name"] == name:
                    raise AlreadyExists(f"VM {name} already exists")
                if vm["uuid"].lower() == vm_uuid:
                    raise AlreadyExists(f"VM uuid {vm_uuid} already belongs to VM {vm['name']}")
            inventory["vms"].append({"name": name, "uuid": vm_uuid, "datastore": datastore})
        return VirtualMachine(name, vm_uuid, datastore)

    def remove_vm(self, name):
        with self._edit() as inventory:
            vms = [vm for vm in inventory["vms"] if vm["name"] != name]
            if len(vms) == len(inventory["vms"]):
                raise NotFound(f"Cannot find vm {name}")
            inventory["vms"] = vms
