"""The embedded ``local`` backend: datastores are directories and VMs are the
Docker hosts of this machine (``inventory``), disks are real VMDK files
(``disks``), and attach is a loop device (``devices``)."""

from .. import Backend
from .devices import Devices, loop_backing_file
from .disks import Disks
from .inventory import Inventory, this_machine_uuid

__all__ = ["LocalBackend", "loop_backing_file", "this_machine_uuid"]


class LocalBackend(Inventory, Disks, Devices, Backend):
    name = "local"
    capabilities = frozenset({Backend.MANAGED_INVENTORY, Backend.POWER})

    def __init__(self, layout):
        self.layout = layout
        self._inventory = None
        self._signature = None
