"""The Docker volume plugins that run in every Docker host (standard library
only): ``vsphere`` (a disk per volume, from vmdk-opsd) and ``vfile`` (shared
volumes, served by Samba over a ``vsphere`` volume)."""

# The release, as vmdkops_admin's (a test keeps them equal): it names the file
# server's image.
__version__ = "0.1.0"
