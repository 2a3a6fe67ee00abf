"""Datastores and VMs: one PropertyCollector query each."""

from .. import Datastore, VirtualMachine
from .session import VsphereError, retried, split_path


class Inventory:
    @retried
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

    @retried
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
