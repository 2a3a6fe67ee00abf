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
        from executor import release_loops, require_root_and_loops

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
