"""The backend contract (DESIGN D1): what the executor needs of a backend,
written once and run against every backend: ``local`` on loop devices, and
``vsphere`` against the simulator as a vCenter and as a standalone ESX host.
"""

import uuid

import pytest

from vmdkops_admin.errors import VmdkopsError

BACKENDS = ["local", "vsphere-vpx", "vsphere-esx"]
GROUP = "22222222-3333-4444-5555-666666666666"


class Env:
    def __init__(self, backend, datastore, vm_a, vm_b):
        self.backend, self.datastore, self.vm_a, self.vm_b = backend, datastore, vm_a, vm_b
        self.made = []

    def disk(self, name=None, size_mb=10, diskformat="thin"):
        self.backend.vmgroup_dir(self.datastore, GROUP, "contract", create=True)
        descriptor = self.backend.descriptor(self.datastore, GROUP, name or uuid.uuid4().hex[:8])
        self.backend.create_disk(descriptor, size_mb, diskformat)
        self.made.append(descriptor)
        self.backend.write_metadata(descriptor, {"status": "detached", "volOpts": {}})
        return descriptor

    def clean(self):
        """Detach and delete what the test made (a simulator outlives a test)."""
        for descriptor in self.made:
            holder = self.backend.attached_to(descriptor)
            if holder:
                self.backend.detach(self.backend.find_vm(holder[0]), descriptor)
            self.backend.delete_disk(descriptor)


def make_env(request, kind):
    if kind == "local":
        from rig.executor import release_loops, require_root_and_loops

        require_root_and_loops()
        inventory = request.getfixturevalue("inventory")
        request.addfinalizer(lambda: release_loops(request.getfixturevalue("home")))
        return Env(inventory, inventory.datastore_by_name("DS1"), inventory.find_vm("VM1"),
                   inventory.find_vm("VM2"))
    backend = request.getfixturevalue("vcsim_backend")(kind.split("-")[1])
    vms = sorted(backend.vms(), key=lambda vm: vm.name)
    return Env(backend, backend.datastores()[0], vms[0], vms[1])


@pytest.fixture(params=BACKENDS)
def env(request, home):
    made = make_env(request, request.param)
    yield made
    made.clean()


def test_inventory(env):
    backend = env.backend
    names = [ds.name for ds in backend.datastores()]
    assert len(names) == len(set(names)) and env.datastore.name in names
    for ds in backend.datastores():
        assert backend.datastore_by_name(ds.name) == ds == backend.datastore_by_url(ds.url)
    assert backend.datastore_by_name("nosuch") is None
    assert backend.find_vm(env.vm_a.name) == env.vm_a == backend.find_vm(env.vm_a.uuid.upper())
    assert backend.find_vm("nosuch") is None


def test_a_closed_backend_opens_again(env):
    """``close`` at the end of a command (a vSphere session logged out); a
    backend used after it works as before."""
    backend = env.backend
    names = [ds.name for ds in backend.datastores()]
    backend.close()
    backend.close()
    assert [ds.name for ds in backend.datastores()] == names
    assert backend.find_vm(env.vm_a.name) == env.vm_a


def test_disks(env):
    backend = env.backend
    descriptor = env.disk("d1", 20)
    assert backend.disk_exists(descriptor)
    capacity, allocated = backend.disk_info(descriptor)
    assert capacity == 20 << 20 and allocated < capacity
    with pytest.raises(FileExistsError):
        backend.create_disk(descriptor, 20, "thin")
    clone = backend.descriptor(env.datastore, GROUP, "d1-clone")
    backend.clone_disk(descriptor, clone, "zeroedthick")
    env.made.append(clone)
    assert backend.disk_info(clone)[0] == capacity
    listed = {(g, v) for g, v, _ in backend.volume_files(env.datastore)}
    assert {(GROUP, "d1"), (GROUP, "d1-clone")} <= listed
    for d in (descriptor, clone):
        backend.delete_disk(d)
        backend.delete_disk(d)  # again: nothing left is not an error
        assert not backend.disk_exists(d)


def test_grow(env):
    """A detached disk grows; the simulator has no ExtendVirtualDisk_Task and says so."""
    backend = env.backend
    descriptor = env.disk("grown", 10, "zeroedthick")
    if backend.name == "vsphere":
        with pytest.raises(VmdkopsError, match="Failed to extend volume: "):
            backend.grow_disk(descriptor, 20, "zeroedthick")
        assert backend.disk_info(descriptor)[0] == 10 << 20
        return
    backend.grow_disk(descriptor, 20, "zeroedthick")
    capacity, allocated = backend.disk_info(descriptor)
    assert capacity == 20 << 20 and allocated >= 20 << 20
    backend.grow_disk(descriptor, 20, "zeroedthick")  # again: it has the size
    assert backend.disk_info(descriptor)[0] == 20 << 20


def test_metadata_with_guard(env):
    backend = env.backend
    descriptor = env.disk()
    backend.write_metadata(descriptor, {"status": "attached", "attachedVMUuid": "a"})
    assert not backend.write_metadata(descriptor, {"status": "detached"}, guard=("attachedVMUuid", "b"))
    assert backend.read_metadata(descriptor)["status"] == "attached"
    assert backend.write_metadata(descriptor, {"status": "detached"}, guard=("attachedVMUuid", "a"))
    meta = backend.read_metadata(descriptor)
    assert meta["status"] == "detached" and "attachedVMUuid" not in meta


def test_attach_and_detach(env):
    backend = env.backend
    descriptor = env.disk()
    reply = backend.attach(env.vm_a, descriptor)
    assert {"Unit", "ControllerPciSlotNumber", "ControllerPciBusNumber"} <= set(reply)
    assert all(isinstance(v, str) for v in reply.values())
    assert backend.attach(env.vm_a, descriptor) == reply  # the same VM: the same slot
    assert backend.attached_to(descriptor)[0] == env.vm_a.uuid
    assert descriptor in backend.attached_disks(env.vm_a)
    with pytest.raises(VmdkopsError, match=f"attached to VM {env.vm_a.name}"):
        backend.attach(env.vm_b, descriptor)
    backend.detach(env.vm_b, descriptor)  # not attached there: success, nothing changes
    assert backend.attached_to(descriptor)[0] == env.vm_a.uuid
    backend.detach(env.vm_a, descriptor)
    backend.detach(env.vm_a, descriptor)
    assert backend.attached_to(descriptor) is None
    assert backend.disk_exists(descriptor)  # detach keeps the disk


def test_a_vm_cut_off_a_disk_gives_it_up(env):
    """A holder that can be cut off (here: no mount on its device, its guest
    not running) is fenced while the block detaches it; the disk is then free."""
    backend = env.backend
    descriptor = env.disk()
    backend.attach(env.vm_a, descriptor)
    with backend.fenced(env.vm_a, descriptor):
        backend.detach(env.vm_a, descriptor)
    assert backend.attached_to(descriptor) is None
    backend.attach(env.vm_b, descriptor)
    assert backend.attached_to(descriptor)[0] == env.vm_b.uuid
    backend.detach(env.vm_b, descriptor)


def test_placement_limits(env):
    """Units 0-6 and 8-15 of at most 4 PVSCSI controllers, the lowest free unit
    first, and the original's message when they are all taken."""
    backend = env.backend
    disks = [env.disk(f"p{i}", 1) for i in range(61)]
    replies = []
    with pytest.raises(VmdkopsError, match="The maximum number of supported volumes has been reached"):
        for d in disks:
            replies.append(backend.attach(env.vm_a, d))
    assert 45 <= len(replies) <= 60  # a VM's own disks take slots too
    units = [int(r["Unit"]) for r in replies]
    assert 7 not in units
    assert units[:6] == sorted(units[:6])  # the lowest free unit first
    for d in disks[:len(replies)]:
        backend.detach(env.vm_a, d)
    assert backend.attached_disks(env.vm_a) == []


def test_volume_of_and_the_listings(env):
    backend = env.backend
    descriptor = env.disk("listed", 20)
    assert backend.volume_of(descriptor) == (env.datastore, GROUP, "listed")
    [disk] = [d for d in backend.disks(env.datastore) if d.volume == "listed"]
    assert disk.vmgroup_uuid == GROUP and backend.volume_of(disk.descriptor)[2] == "listed"
    assert disk.capacity in (20 << 20, None)  # the simulator's browser has no capacity
    assert disk.problem is None
    backend.check_disk(descriptor)  # a disk the backend made is its own
    gone = backend.descriptor(env.datastore, GROUP, "never-made")
    allocated, missing = backend.allocated_bytes_many([descriptor, gone])
    assert allocated == backend.disk_info(descriptor)[1] and missing is None


def test_attachments_and_holders(env):
    backend = env.backend
    descriptor = env.disk()
    reply = backend.attach(env.vm_a, descriptor)
    assert (env.vm_a.uuid, descriptor, True) in [(u, d, present) for u, d, present in backend.attachments()]
    assert backend.holders()[descriptor] == (env.vm_a.uuid, reply) == backend.attached_to(descriptor)
    assert backend.stray_devices() == []
    backend.detach(env.vm_a, descriptor)
    assert descriptor not in backend.holders()
    assert descriptor not in [d for _, d, _ in backend.attachments()]
    if backend.name == "local":  # an attach interrupted after its loop device was made
        import os
        import subprocess

        extent = os.path.realpath(descriptor[:-len(".vmdk")] + "-flat.vmdk")
        device = subprocess.run(["losetup", "-f", "--show", extent], capture_output=True, text=True,
                                check=True).stdout.strip()
        assert backend.stray_devices() == [(device, extent)]
        backend.release_device(device, extent)
    assert backend.stray_devices() == []


def test_vmgroup_folders(env):
    """A vmgroup renamed keeps its folder; a 1.0 vmgroup's folder moves to its
    new uuid's (``config import``), once."""
    backend = env.backend
    descriptor = env.disk("kept")
    backend.vmgroup_renamed(GROUP, "contract", "contract-renamed")
    assert backend.disk_exists(descriptor)
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    assert backend.vmgroup_folder_moved(env.datastore, old, new, "_DEFAULT") is None
    backend.vmgroup_dir(env.datastore, old, "", create=True)
    moving = backend.descriptor(env.datastore, old, "moving")
    backend.create_disk(moving, 1, "thin")
    moved = backend.descriptor(env.datastore, new, "moving")
    env.made.append(moved)
    assert backend.vmgroup_folder_moved(env.datastore, old, new, "_DEFAULT") == "moved"
    assert backend.disk_exists(moved) and not backend.disk_exists(moving)
    backend.vmgroup_dir(env.datastore, old, "", create=True)
    assert backend.vmgroup_folder_moved(env.datastore, old, new, "_DEFAULT") == "exists"
    backend.vmgroup_removed(GROUP, "contract-renamed")  # volumes left: the folder stays
    assert backend.disk_exists(descriptor)


def test_policies(env):
    backend = env.backend
    rules = '(("hostFailuresToTolerate" i1))'
    scope = backend.policy_scope()
    assert len(scope) == 2 and all(isinstance(part, str) for part in scope)
    assert isinstance(backend.supports_policies(env.datastore), bool)
    assert backend.find_external_policy("no-such-policy") is None
    name = f"contract-{uuid.uuid4().hex[:6]}"
    backend.policy_created(name, rules)
    try:
        backend.policy_updated(name, '(("hostFailuresToTolerate" i0))')
        ours = [found for found, _, mine in backend.external_policies() if mine]
        assert (name in ours) == (scope[0] == "SPBM")
        descriptor = env.disk()
        backend.apply_policy(descriptor, name, rules)
        assert backend.read_metadata(descriptor)["storagePolicy"] == {"name": name, "content": rules}
    finally:
        backend.policy_removed(name)
    assert name not in [found for found, _, _ in backend.external_policies()]


def test_leftovers_and_the_shared_db_file(env):
    backend = env.backend
    shared = backend.shared_db_file(env.datastore)
    if backend.name == "local":
        assert shared.endswith("/dockvols/vmdkops_config.db")
        folder = backend.vmgroup_dir(env.datastore, GROUP, "contract", create=True)
        with open(f"{folder}/half-flat.vmdk", "wb") as f:
            f.write(b"\0" * 512)
        [left] = [x for x in backend.leftover_files() if x.volume == "half"]
        assert not left.busy and left.datastore == env.datastore
        backend.remove_leftover(left)
    else:
        assert shared is None  # the DB cannot be a file of this host there
    assert [x for x in backend.leftover_files() if x.volume == "half"] == []


def test_capabilities(env, tmp_path):
    """What a backend declares it can do works; what it does not is refused
    with a message, and changes nothing."""
    import threading

    from vmdkops_admin.backends import Backend, Unsupported

    backend = env.backend
    before = (backend.datastores(), backend.vms())
    if backend.can(Backend.MANAGED_INVENTORY):
        backend.add_datastore("DSX", str(tmp_path))
        backend.add_vm("VMX", None, "DSX")
        assert backend.find_vm("VMX").datastore == "DSX"
        backend.remove_vm("VMX")
        backend.remove_datastore("DSX")
    else:
        for refused in (lambda: backend.add_datastore("DSX", str(tmp_path)), lambda: backend.add_vm("VMX"),
                        lambda: backend.remove_vm(env.vm_a.name),
                        lambda: backend.remove_datastore(env.datastore.name)):
            with pytest.raises(Unsupported, match="inventory is managed in vSphere"):
                refused()
    if backend.can(Backend.POWER):
        backend.set_power(env.vm_b.name, False)
        with pytest.raises(VmdkopsError, match="powered off"):
            backend.attach(env.vm_b, env.disk())
        backend.set_power(env.vm_b.name, True)
    else:
        with pytest.raises(Unsupported, match="powered in vSphere"):
            backend.set_power(env.vm_b.name, False)
    stop = threading.Event()
    if backend.can(Backend.POWER_WATCH):
        watch = threading.Thread(target=backend.watch_power_off, args=(lambda vms: None, stop))
        watch.start()
        stop.set()
        backend.stop_watch()
        watch.join(timeout=30)
        assert not watch.is_alive()
    else:
        with pytest.raises(Unsupported):
            backend.watch_power_off(lambda vms: None, stop)
    assert (backend.datastores(), backend.vms()) == before
    if backend.server() is None:
        with pytest.raises(Unsupported):
            backend.session_info()
    else:
        assert backend.session_info()["server"] == backend.server()
        assert backend.space(env.datastore)[0] > 0


def test_the_suite_covers_the_whole_contract():
    """Every method of the declared contract is called by a test above."""
    import inspect

    from vmdkops_admin.backends import Backend

    with open(__file__) as f:
        source = f.read()
    declared = [name for name, _ in inspect.getmembers(Backend, inspect.isfunction) if not name.startswith("_")]
    assert [name for name in declared if f".{name}(" not in source] == []
