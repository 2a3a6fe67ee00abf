"""The embedded ``local`` backend. Datastores are directories and VMs are the
Docker hosts of this machine, kept in an inventory file under the state root.
On first use the inventory registers this machine as a VM whose home is the
datastore ``datastore1`` (a directory under the state root)."""

import contextlib
import fcntl
import glob
import json
import os
import re
import socket
import subprocess
import uuid as uuidlib

from .. import sidecar
from ..faults import crashpoint
from ..errors import AlreadyExists, InvalidArgument, NotFound, VmdkopsError
from ..paths import DOCKVOLS, shared_db_path
from . import AttachedElsewhere, Backend, Datastore, Disk, Leftover, VirtualMachine, pvscsi, vmdkfile

DEFAULT_DATASTORE = "datastore1"
# Extents, snapshot deltas and change-tracking files sit beside descriptors.
_NOT_A_VOLUME = re.compile(r"-(flat|delta|ctk|digest|\d{6})\.vmdk$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An extent or a claim (leftovers when their descriptor is missing), or a
# temporary file of a descriptor, extent, side-car or claim:
# <volume><suffix>[.<pid>.tmp].
_LEFTOVER = re.compile(r"^(.+?)(-flat\.vmdk|\.vmdk|\.vmfd|\.lck)(\.\d+\.tmp)?$")
CLAIM_SUFFIX = ".lck"


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
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


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
        self._signature = None

    # -- inventory file ---------------------------------------------------

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

    # -- the contract ---------------------------------------------------------

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

    def set_power(self, name, on):
        """Mark a VM powered on or off (a VM of this machine has no power of
        its own to read: the administrator says what happened to it)."""
        with self._edit() as inventory:
            found = next((vm for vm in inventory["vms"] if vm["name"] == name), None)
            if found is None:
                raise NotFound(f"Cannot find vm {name}")
            found["power"] = "on" if on else "off"

    def powered_off(self, vm_uuid):
        return any(vm["uuid"] == vm_uuid and vm.get("power") == "off" for vm in self._load()["vms"])

    def remove_vm(self, name):
        with self._edit() as inventory:
            vms = [vm for vm in inventory["vms"] if vm["name"] != name]
            if len(vms) == len(inventory["vms"]):
                raise NotFound(f"Cannot find vm {name}")
            inventory["vms"] = vms

    # -- volumes on a datastore -------------------------------------------------

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

    def holders(self):
        found = {}
        for vm_uuid, disks in self._read_attachments().items():  # attached before claims
            for disk in disks:
                found[disk["path"]] = (vm_uuid, _device_info(disk))
        for ds in self.datastores():
            for claim_file in glob.glob(os.path.join(glob.escape(ds.path), DOCKVOLS, "*", "*" + CLAIM_SUFFIX)):
                descriptor = os.path.realpath(claim_file[:-len(CLAIM_SUFFIX)] + ".vmdk")
                claim = read_claim(descriptor)
                if claim is not None:
                    found[descriptor] = (claim["vm"], _device_info(claim))
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

    # -- attach and detach: a PVSCSI slot on the VM and a loop device ---------------

    def _attachments(self):
        os.makedirs(self.layout.root, exist_ok=True)
        return locked_json(os.path.join(self.layout.root, "attachments.json"), dict)

    def _read_attachments(self):
        try:
            with open(os.path.join(self.layout.root, "attachments.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def attached_to(self, descriptor):
        """(vm uuid, device info) of the VM the disk is attached to, or None:
        its claim, which every host sharing the datastore sees."""
        path = os.path.realpath(descriptor)
        claim = read_claim(path)
        if claim is not None:
            return claim["vm"], _device_info(claim)
        for vm_uuid, disks in self._read_attachments().items():  # attached before claims
            for disk in disks:
                if disk["path"] == path:
                    return vm_uuid, _device_info(disk)
        return None

    def attached_disks(self, vm):
        """Descriptors of the disks attached to ``vm``."""
        return [disk["path"] for disk in self._read_attachments().get(vm.uuid, [])]

    def attachments(self):
        """(vm uuid, descriptor, whether the device is still there) of every
        attachment of this host; a claim of this host that no attachment
        records (an attach interrupted after its claim) has no device."""
        found = [(vm_uuid, disk["path"], loop_backing_file(disk["device"]) == disk["extent"])
                 for vm_uuid, disks in self._read_attachments().items() for disk in disks]
        recorded = {path for _, path, _ in found}
        host = self.host_id
        for ds in self.datastores():
            for claim_file in glob.glob(os.path.join(glob.escape(ds.path), DOCKVOLS, "*", "*" + CLAIM_SUFFIX)):
                descriptor = claim_file[:-len(CLAIM_SUFFIX)] + ".vmdk"
                claim = read_claim(descriptor)
                if claim and claim.get("host") == host and os.path.realpath(descriptor) not in recorded:
                    found.append((claim["vm"], os.path.realpath(descriptor), False))
        return found

    def stray_devices(self):
        """Loop devices on one of our extents that no attachment records (an
        attach interrupted between losetup and its record); a device another
        installation on this machine has claimed is its own."""
        recorded = {disk["device"] for disks in self._read_attachments().values() for disk in disks}
        roots = [os.path.realpath(os.path.join(ds.path, DOCKVOLS)) + os.sep for ds in self.datastores()]
        stray = []
        for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
            device = "/dev/" + backing.split("/")[3]
            extent = loop_backing_file(device)
            if (device not in recorded and extent and extent.endswith(vmdkfile.EXTENT_SUFFIX)
                    and any(extent.startswith(root) for root in roots)):
                claim = read_claim(extent[:-len(vmdkfile.EXTENT_SUFFIX)] + ".vmdk")
                if claim is None or claim.get("host") == self.host_id:
                    stray.append((device, extent))
        return stray

    def release_device(self, device, extent):
        _release_loop({"device": device, "extent": extent, "path": extent})

    def volume_of(self, descriptor):
        """(datastore, volume name) of a descriptor in a datastore's dockvols."""
        folder, file_name = os.path.split(os.path.realpath(descriptor))
        dockvols = os.path.dirname(folder)
        for ds in self.datastores():
            if os.path.realpath(os.path.join(ds.path, DOCKVOLS)) == dockvols:
                return ds, file_name[:-len(".vmdk")]
        return None, None

    def attach(self, vm, descriptor):
        """Attach to ``vm``: the same VM again gets its existing slot; a disk
        on another VM (of this host or, by its claim, of another host sharing
        the datastore) is refused, and nothing is left changed."""
        if self.powered_off(vm.uuid):
            raise VmdkopsError(f"VM {vm.name} is powered off")
        path = os.path.realpath(descriptor)
        _, extent = vmdkfile.read_extent(path)
        with self._attachments() as state:
            for vm_uuid, disks in state.items():
                for disk in disks:
                    if disk["path"] == path:
                        if vm_uuid == vm.uuid:
                            return _device_info(disk)
                        raise AttachedElsewhere(descriptor, self._vm_name(vm_uuid))
            claim = read_claim(path)
            if claim is not None:
                raise AttachedElsewhere(descriptor, claim.get("vmName") or claim["vm"])
            disks = state.setdefault(vm.uuid, [])
            used = {}
            for disk in disks:
                used.setdefault(disk["bus"], set()).add(disk["unit"])
            used.setdefault(0, set())
            bus, unit, _ = pvscsi.place(used)
            # Read-write, as ESX attaches: a read-only volume is mounted read-only
            # by the guest (which must format it at create first).
            device = _losetup(["--find", "--show", extent])
            crashpoint("attach:losetup")
            disk = {"path": path, "extent": os.path.realpath(extent), "bus": bus, "unit": unit,
                    "device": device}
            try:
                _claim(path, dict(disk, vm=vm.uuid, vmName=vm.name, host=self.host_id))
            except FileExistsError:
                _release_loop(disk)
                claim = read_claim(path) or {}
                raise AttachedElsewhere(descriptor, claim.get("vmName") or claim.get("vm", "?")) from None
            crashpoint("attach:claim")
            disks.append(disk)
            return _device_info(disk)

    def _vm_name(self, vm_uuid):
        return next((v.name for v in self.vms() if v.uuid == vm_uuid), vm_uuid)

    def detach(self, vm, descriptor):
        """Detach from ``vm``; a disk the VM does not have is not an error."""
        path = os.path.realpath(descriptor)
        with self._attachments() as state:
            disks = state.get(vm.uuid, [])
            for disk in list(disks):
                if disk["path"] == path:
                    _release_loop(disk)
                    disks.remove(disk)
            if not disks:
                state.pop(vm.uuid, None)
            claim = read_claim(path)
            if claim is not None and claim["vm"] == vm.uuid:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path[:-len(".vmdk")] + CLAIM_SUFFIX)


def read_claim(descriptor):
    """The claim of an attached disk: which VM of which host has it, on which
    slot and device. It lives beside the disk, so every host that shares
    the datastore sees it (as ESX hosts see each other's disk locks)."""
    try:
        with open(descriptor[:-len(".vmdk")] + CLAIM_SUFFIX) as f:
            claim = json.load(f)
    except (OSError, ValueError):
        return None
    return claim if isinstance(claim, dict) and isinstance(claim.get("vm"), str) else None


def _claim(descriptor, claim):
    """Write a whole claim, or ``FileExistsError`` if the disk has one: the
    first of two hosts attaching at once wins."""
    target = descriptor[:-len(".vmdk")] + CLAIM_SUFFIX
    tmp = vmdkfile.temporary_name(target)
    with open(tmp, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        json.dump(claim, f)
        f.flush()
        os.fsync(f.fileno())
        try:
            os.link(tmp, target)
        finally:
            os.unlink(tmp)


def _device_info(disk):
    """The original's attach reply, plus the device path a local guest uses."""
    slot = 160 + 32 * disk["bus"]
    return {"Unit": str(disk["unit"]), "ControllerPciSlotNumber": str(slot),
            "ControllerPciBusNumber": "0.0", "Device": disk["device"]}


def _losetup(args):
    result = subprocess.run(["losetup"] + args, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise VmdkopsError(f"Failed to attach disk: {result.stderr.strip() or 'losetup failed'}")
    return result.stdout.strip()


def loop_backing_file(device):
    """The file behind a loop device, or None when it is not attached."""
    name = os.path.basename(device)
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().strip().removesuffix(" (deleted)")
    except OSError:
        return None


def _release_loop(disk):
    # Only the device we attached, and only while it still backs our extent:
    # other processes on the machine use loop devices too.
    if loop_backing_file(disk["device"]) == disk["extent"]:
        result = subprocess.run(["losetup", "--detach", disk["device"]], capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0 and loop_backing_file(disk["device"]) == disk["extent"]:
            raise VmdkopsError(f"Failed to detach {disk['path']}: {result.stderr.strip()}")
