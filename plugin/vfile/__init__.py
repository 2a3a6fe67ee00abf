"""The vfile driver: shared volumes across a Docker Swarm (VSSD), their state
in etcd and their data served by Samba (standard library only)."""
