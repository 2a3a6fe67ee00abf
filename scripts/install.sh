#!/usr/bin/env bash
# Installs vmdkops on this machine and runs the embedded default: the local
# backend (this machine registered as a VM, a datastore under the state root),
# a local SQLite config DB, the executor vmdk-opsd and the Docker volume plugin
# (driver "vsphere"). With systemd, both run as services (units in
# scripts/systemd/); without it they are started in the background.
# Run as root; VMDKOPS_HOME picks another state root (default /var/lib/vmdkops),
# VMDKOPS_VENV another virtualenv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup-env.sh

apt_install e2fsprogs xfsprogs
python_venv "."
admin="$VENV/bin/vmdkops_admin"
home="${VMDKOPS_HOME:-/var/lib/vmdkops}"
home="$(mkdir -p "$home" && cd "$home" && pwd)"
export VMDKOPS_HOME="$home"

if "$admin" config status | grep -q NotConfigured; then
    "$admin" config init --local
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { for _ in $(seq 100); do eval "$1" && return 0; sleep 0.1; done; return 1; }

if [ -d /run/systemd/system ]; then
    for unit in vmdk-opsd vsphere-storage-for-docker; do
        sed -e "s|@VENV@|$VENV|g" -e "s|@HOME@|$home|g" "scripts/systemd/$unit.service" \
            > "/etc/systemd/system/$unit.service"
    done
    systemctl daemon-reload
    systemctl enable --now vmdk-opsd vsphere-storage-for-docker
else
    mkdir -p "$home/run" "$home/log"
    if ! running "$home/run/vmdk-opsd.pid"; then
        nohup "$VENV/bin/vmdk-opsd" > "$home/log/vmdk-opsd.out" 2>&1 &
        wait_for "running $home/run/vmdk-opsd.pid"
    fi
    if ! running "$home/run/plugin.pid"; then
        nohup "$VENV/bin/vsphere-storage-for-docker" --executor_socket "$home/run/vmdk-opsd.sock" \
            --credential_file "$home/local-vm.credential" --log_path "$home/log/plugin.log" \
            > "$home/log/plugin.out" 2>&1 &
        echo $! > "$home/run/plugin.pid"
        wait_for "[ -S /run/docker/plugins/vsphere.sock ]"
    fi
fi
"$admin" status
echo
"$admin" host datastore ls
echo
"$admin" vmgroup ls
echo
echo "Installed: $admin, $VENV/bin/vmdk-opsd and $VENV/bin/vsphere-storage-for-docker."
echo "The plugin listens on /run/docker/plugins/vsphere.sock: with Docker running, try"
echo "  docker volume create -d vsphere -o size=1gb demo && docker run --rm -v demo:/data busybox ls /data"
if [ ! -d /run/systemd/system ]; then
    echo "Stop them with: kill \$(cat $home/run/plugin.pid) \$(cat $home/run/vmdk-opsd.pid)"
fi
