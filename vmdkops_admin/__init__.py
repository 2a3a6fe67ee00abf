"""vSphere Storage for Docker, host side: the admin CLI, the auth DB, the
executor and the backends that make, attach and remove VMDK disks.

Where a change goes:

- a guest's request (``executor/`` receives it): ``volumes`` (what a VM does
  to a volume), ``authorize`` (what it may), ``takeover`` and ``liveness``
  (a silent VM's volumes), ``credentials`` (who it is);
- an administrator's command (``cli/`` parses and prints it; the library
  does it): ``volume_admin`` (volumes seen by the administrator),
  ``vmgroup``, ``policy`` (with ``policy_text``, the policy language),
  ``report``, ``reconcile``, ``legacy`` (an original installation
  brought over), ``config_admin`` (the config DB's life cycle);
- the config DB: ``config`` (its modes, opening it), ``db/`` (tables,
  engines, migrations), ``steps`` (crash-safe steps), ``audit``;
- the disks themselves: ``backends/`` (``local``, ``vsphere``);
- what all of them use: ``names``, ``sizes``, ``errors``, ``paths``,
  ``service``, ``jsonfile``, ``progress``, ``faults`` (crash tests)."""

__version__ = "0.1.0"
