"""The inventory of the local backend: datastores (directories) and VMs (the
Docker hosts of this machine) in a JSON file under the state root. On first
use it registers this machine as a VM whose home is the datastore
``datastore1`` (a directory under the state root)."""

import contextlib
import json
import os
import socket
import uuid as uuidlib

from ...errors import VM_NOT_FOUND, AlreadyExists, InvalidArgument, NotFound
from ...jsonfile import locked_json
from ...names import validate_datastore_name, validate_vm_name
from .. import Datastore, VirtualMachine

DEFAULT_DATASTORE = "datastore1"


def datastore_url_for(path):
    """A datastore's identity: its real path, in the form vSphere gives URLs."""
    return "ds://" + os.path.realpath(path).rstrip("/") + "/"


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


class Inventory:
    def _load(self):
        """The inventory, read again whenever the file has changed (a running
        executor sees what ``vmdkops_admin host`` does)."""
        try:
            st = os.stat(self.layout.inventory)
        except FileNotFoundError:
            with self._edit():
                pass
            st = os.stat(self.layout.inventory)
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        if self._inventory is None or signature != self._signature:
            with open(self.layout.inventory) as f:
                self._inventory = json.load(f)
            self._signature = signature
        return self._inventory

    def _first_inventory(self):
        path = os.path.join(self.layout.datastores, DEFAULT_DATASTORE)
        os.makedirs(path, exist_ok=True)
        return {
            "host": str(uuidlib.uuid4()),
            "datastores": [{"name": DEFAULT_DATASTORE, "path": path, "url": datastore_url_for(path)}],
            "vms": [{"name": socket.gethostname(), "uuid": this_machine_uuid(),
                     "datastore": DEFAULT_DATASTORE}],
        }

    @contextlib.contextmanager
    def _edit(self):
        os.makedirs(self.layout.root, exist_ok=True)
        with locked_json(self.layout.inventory, self._first_inventory) as inventory:
            yield inventory
        self._inventory, self._signature = None, None

    @property
    def host_id(self):
        """This installation's identity in the claims it writes on shared datastores."""
        host = self._load().get("host")
        if host is None:  # an inventory from before claims
            with self._edit() as inventory:
                host = inventory.setdefault("host", str(uuidlib.uuid4()))
        return host

    def datastores(self):
        return [Datastore(d["name"], d["url"], d["path"]) for d in self._load()["datastores"]]

    def vms(self):
        return [VirtualMachine(v["name"], v["uuid"], v["datastore"]) for v in self._load()["vms"]]

    def space(self, datastore):
        try:
            st = os.statvfs(datastore.path)
        except OSError:
            return None, None
        return st.f_blocks * st.f_frsize >> 20, st.f_bavail * st.f_frsize >> 20

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

    def set_power(self, name, on):
        """Mark a VM powered on or off (a VM of this machine has no power of
        its own to read: the administrator says what happened to it)."""
        with self._edit() as inventory:
            found = next((vm for vm in inventory["vms"] if vm["name"] == name), None)
            if found is None:
                raise NotFound(VM_NOT_FOUND.format(name))
            found["power"] = "on" if on else "off"

    def powered_off(self, vm_uuid):
        return any(vm["uuid"] == vm_uuid and vm.get("power") == "off" for vm in self._load()["vms"])

    def remove_vm(self, name):
        with self._edit() as inventory:
            vms = [vm for vm in inventory["vms"] if vm["name"] != name]
            if len(vms) == len(inventory["vms"]):
                raise NotFound(VM_NOT_FOUND.format(name))
            inventory["vms"] = vms
