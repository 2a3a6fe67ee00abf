#!/usr/bin/env bash
# Installs everything the tests need (Debian packages, a virtualenv with the
# package and its test dependencies) and runs the test suite. The tests start
# and stop their own services (a private PostgreSQL cluster); nothing is left
# running. Extra arguments go to pytest, e.g. scripts/test.sh -k vmgroup
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-env.sh

apt_install postgresql qemu-utils docker.io busybox-static xfsprogs golang-go golang-github-vmware-govmomi-dev \
    etcd-server etcd-client samba smbnetfs fuse3 iproute2 docker-registry
python_venv ".[test]"

# Three workers, a test module on one worker (so that a module's swarm is
# started once), the swarm modules first (tests/conftest.py); -n 0 runs
# everything in this process.
exec "$VENV/bin/python" -m pytest -n 3 --dist loadfile --no-loadscope-reorder "$@"
