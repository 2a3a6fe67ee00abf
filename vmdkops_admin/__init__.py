"""vSphere Storage for Docker, host side: the admin CLI, the auth DB, the
executor and the backends that make, attach and remove VMDK disks."""

__version__ = "0.1.0"
