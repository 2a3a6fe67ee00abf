"""Where a new disk goes on a VM's ParaVirtual SCSI controllers, with ESX's
limits: at most 4 SCSI controllers (bus 0-3), units 0-15 with unit 7 reserved
for the controller, the lowest free unit on the first controller with room,
and a new controller when all are full."""

from ..errors import VmdkopsError

MAX_CONTROLLERS = 4
UNITS = tuple(unit for unit in range(16) if unit != 7)
FULL_MESSAGE = ("Failed to place new disk - The maximum number of supported volumes "
                "has been reached.")


def place(used, scsi_buses=None):
    """``used``: PVSCSI bus -> units in use. ``scsi_buses``: every SCSI
    controller's bus, PVSCSI or not (they all count towards the limit).
    Returns (bus, unit, needs_new_controller)."""
    for bus in sorted(used):
        free = [unit for unit in UNITS if unit not in used[bus]]
        if free:
            return bus, free[0], False
    taken = set(scsi_buses if scsi_buses is not None else used)
    if len(taken) >= MAX_CONTROLLERS:
        raise VmdkopsError(FULL_MESSAGE)
    bus = min(b for b in range(MAX_CONTROLLERS) if b not in taken)
    return bus, UNITS[0], True
