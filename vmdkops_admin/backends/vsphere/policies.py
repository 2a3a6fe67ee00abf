"""Storage policies: SPBM profiles on vCenter, the vSAN policy text on a standalone host."""

from .session import TaskFailed, VsphereError, retried


class Policies:
    @property
    def spbm(self):
        from .spbm import Spbm

        if self._spbm is None:
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

    @retried
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

    @retried
    def policy_created(self, name, content):
        self._save_policy(name, content, lambda: self.spbm.create(name, content))

    @retried
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

    @retried
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

    @retried
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
