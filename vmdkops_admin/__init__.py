"""vSphere Storage for Docker, host side: the admin CLI, the auth DB, the
executor and the backends that make, attach and remove VMDK disks.

Where a change goes, folder by folder:

- ``executor/``: a guest's request. ``server`` receives it, ``dispatch``
  routes it; ``volumes`` is what a VM does to a volume (``options``, a
  create's), ``authorize`` what it may, ``credentials`` who it is, ``liveness`` and ``takeover`` a silent
  VM's volumes, ``detach`` a disk taken off a VM (by any of them);
- ``cli/`` and ``admin/``: an administrator's command. ``cli/<group>``
  parses and prints it, ``admin/`` does it: ``volumes`` (as the
  administrator sees them), ``vmgroups``, ``policies``, ``reports``,
  ``reconcile``, ``legacy`` (an original installation brought over);
- ``db/``: the config DB. ``models`` (tables), ``migrate``, ``modes`` (its
  modes, opening it), ``lifecycle`` (``config init|rm|mv|upgrade``),
  ``steps`` (crash-safe steps), ``audit``;
- ``backends/``: the disks themselves (``local``, ``vsphere``);
- this folder: what all of them use. ``names``, ``sizes``, ``errors``,
  ``paths``, ``service`` (the executor as the admin side sees it),
  ``jsonfile``, ``progress``, ``vsan_rules`` (the policy language),
  ``faults`` (crash tests)."""

__version__ = "0.1.0"
