"""The ``vsphere`` backend: pyvmomi against ESX or vCenter, in parts that
share one session (``session``): the inventory, disks and side-cars,
devices, the power-state watch and storage policies."""

import threading

from .. import Backend
from .devices import Devices
from .disks import Disks
from .inventory import Inventory
from .policies import Policies
from .session import Session, TaskFailed, VsphereError, load_settings, split_path
from .watch import PowerWatch

__all__ = ["VsphereBackend", "VsphereError", "TaskFailed", "load_settings", "split_path"]


class VsphereBackend(Session, Inventory, Disks, Devices, Policies, PowerWatch, Backend):
    name = "vsphere"
    capabilities = frozenset({Backend.POWER_WATCH})

    def __init__(self, settings):
        Session.__init__(self, settings)
        self._instances = {}  # instance uuid -> VM, from the last vms()
        self._listings = {}  # datastore name -> (time, {descriptor: (capacity, allocated)})
        # Capacity (MB) of disks made by this process, kept in their side-cars
        # too: the simulator's datastore browser reports no capacity.
        self._sizes = {}
        self._vm_locks, self._vm_locks_guard = {}, threading.Lock()
        self._watching = None  # the property collector of a running power-state watch
        self._spbm = None
