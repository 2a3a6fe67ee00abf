#!/usr/bin/env bash
# Installs vmdkops on this machine and sets up the embedded default: the local
# backend (this machine registered as a VM, a datastore under the state root)
# and a local SQLite config DB. Run as root; VMDKOPS_HOME picks another state
# root (default /var/lib/vmdkops), VMDKOPS_VENV another virtualenv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-env.sh

python_venv "."
admin="$VENV/bin/vmdkops_admin"

if "$admin" config status | grep -q NotConfigured; then
    "$admin" config init --local
fi
"$admin" status
echo
"$admin" host datastore ls
echo
"$admin" vmgroup ls
echo
echo "Installed: $admin (add $VENV/bin to PATH)."
