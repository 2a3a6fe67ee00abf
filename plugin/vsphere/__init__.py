"""The vsphere driver: a VMDK disk per volume, made, attached and detached
by vmdk-opsd (``client``, over ``protocol``), found as a block device in
this guest (``devices``), formatted and mounted here (``driver``)."""
