"""The test rig, for the tests and the benchmarks alike: a real vmdk-opsd
and a guest's client of it (``executor``), Docker hosts with their plugins
and a private registry (``docker``), a swarm whose nodes are Docker hosts in
network namespaces (``swarm``), the vSphere simulator (``vcsim``); and what
they share here: the inventory, waiting, and a part that is missing."""

import os
import time

IN_CI = os.environ.get("CI") == "true"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The inventory's VMs, as the tests' state roots list them.
VM1_UUID = "564dac12-b1a0-f735-0df3-bceb00b30340"
VM2_UUID = "564d9bc4-bfd6-b648-935b-6353fb6dc1e7"
VM3_UUID = "564d1111-2222-3333-4444-555566667777"
VM4_UUID = "564d4444-aaaa-bbbb-cccc-ddddeeeeffff"
UUIDS = {"VM1": VM1_UUID, "VM2": VM2_UUID, "VM3": VM3_UUID, "VM4": VM4_UUID}


def inventory(home, datastores, vms):
    """The local backend of the state root ``home`` with its datastores
    (name -> folder, made) and VMs (name -> datastore; VMn has VMn_UUID)."""
    from vmdkops_admin.backends.local import LocalBackend
    from vmdkops_admin.paths import Layout

    backend = LocalBackend(Layout(str(home)))
    for name, folder in datastores.items():
        os.makedirs(folder, exist_ok=True)
        backend.add_datastore(name, str(folder))
    for name, datastore in vms.items():
        backend.add_vm(name, UUIDS.get(name), datastore)
    return backend


def missing(part):
    """Skip locally, fail in CI, naming the part that is not there."""
    import pytest

    if IN_CI:
        pytest.fail(f"{part} is not available; CI must run every integration test")
    pytest.skip(f"{part} is not available")


def wait(predicate, timeout, interval=0.1):
    """Whether ``predicate()`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
