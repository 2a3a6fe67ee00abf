#!/usr/bin/env bash
# Installs vmdkops on this machine and runs the embedded default: the local
# backend (this machine registered as a VM, a datastore under the state root),
# a local SQLite config DB, and the executor vmdk-opsd on its unix socket.
# Run as root; VMDKOPS_HOME picks another state root (default /var/lib/vmdkops),
# VMDKOPS_VENV another virtualenv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-env.sh

python_venv "."
admin="$VENV/bin/vmdkops_admin"
home="${VMDKOPS_HOME:-/var/lib/vmdkops}"

if "$admin" config status | grep -q NotConfigured; then
    "$admin" config init --local
fi
if ! "$admin" status --fast | grep -q "Status: Running"; then
    mkdir -p "$home/run"
    nohup "$VENV/bin/vmdk-opsd" > "$home/run/vmdk-opsd.out" 2>&1 &
    for _ in $(seq 50); do
        "$admin" status --fast | grep -q "Status: Running" && break
        sleep 0.2
    done
fi
"$admin" status
echo
"$admin" host datastore ls
echo
"$admin" vmgroup ls
echo
echo "Installed: $admin and $VENV/bin/vmdk-opsd (add $VENV/bin to PATH)."
echo "vmdk-opsd runs with pid $(cat "$home/run/vmdk-opsd.pid"); this machine's VM credential is in"
echo "$home/local-vm.credential. Stop it with: kill \$(cat $home/run/vmdk-opsd.pid)"
