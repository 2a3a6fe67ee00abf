#!/bin/bash
# Build a plugin as a Docker managed (v2) plugin from this machine's own
# Python (standard library only) and tools, with no registry and no
# internet: a rootfs, its config.json, then `docker plugin create`; with
# --push, `docker plugin push`. DOCKER_HOST is honoured.
#
#   scripts/build-plugin.sh [--driver vsphere] [--tag REF] [--push]
#
# REF defaults to vmdkops/vsphere-storage-for-docker:<version>. Install it as
# the original was installed, with the host paths it needs:
#   docker plugin install --grant-all-permissions --alias vsphere REF \
#       executor.source=/var/lib/vmdkops/run credential.source=/var/lib/vmdkops/local-vm.credential
set -euo pipefail

driver=vsphere tag="" push=0
while [ $# -gt 0 ]; do
    case "$1" in
        --driver) driver=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --push) push=1; shift ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-plugin.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$driver" in
    vsphere) binary=vsphere-storage-for-docker; module=plugin.main; mountpoint=/mnt/vmdk ;;
    *) echo "build-plugin.sh: --driver vsphere (vfile is not packaged yet)" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/vmdkops_admin/__init__.py")
tag=${tag:-vmdkops/$binary:$version}
python=$(readlink -f /usr/bin/python3)
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
tools="$python /bin/sh mount umount losetup blkid blockdev mke2fs mkfs.ext2 mkfs.ext3 mkfs.ext4
       mkfs.xfs e2fsck resize2fs xfs_growfs"

work=$(mktemp -d /tmp/vmdkops-plugin-XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"
start=$(date +%s%N)

# The interpreter's standard library, without what a plugin never imports.
mkdir -p "$rootfs$stdlib"
tar -C "$stdlib" --exclude=site-packages --exclude=dist-packages --exclude=test --exclude=idlelib \
    --exclude=tkinter --exclude=turtledemo --exclude=ensurepip --exclude=lib2to3 \
    --exclude=config-3.* -cf - . | tar -C "$rootfs$stdlib" -xf -

# The tools, and every library they and the stdlib's extensions load.
binaries=()
for tool in $tools; do
    path=$(command -v "$tool" || true)
    [ -n "$path" ] || { echo "build-plugin.sh: $tool not found" >&2; exit 1; }
    binaries+=("$path")
    cp --parents -L "$path" "$rootfs"
done
ln -sf "$python" "$rootfs/usr/bin/python3"
for file in "${binaries[@]}" "$stdlib"/lib-dynload/*.so; do
    ldd "$file" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
    cp --parents -L "$lib" "$rootfs"
done
mkdir -p "$rootfs/etc"
cp /etc/passwd /etc/group "$rootfs/etc/"

# The plugin itself, a build id (two builds never have the same rootfs),
# and the folders its mounts land on.
mkdir -p "$rootfs/usr/lib/vmdkops"
tar -C "$repo" --exclude=__pycache__ -cf - plugin | tar -C "$rootfs/usr/lib/vmdkops" -xf -
build_id="$version+$(date -u +%Y%m%dT%H%M%SZ).$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$build_id" > "$rootfs/usr/lib/vmdkops/BUILD"
mkdir -p "$rootfs"{/dev,/proc,/sys,/tmp,/run/docker/plugins,/run/vmdkops,/run/vmdkops-credential,/etc/vmdkops,/var/log,/var/run,$mountpoint}
touch "$rootfs/run/vmdkops-credential/vm.credential" "$rootfs/var/run/docker.sock"

cat > "$work/config.json" <<EOF
{
  "description": "vmdkops $driver Docker Volume plugin (Docker volumes backed by VMDK disks)",
  "documentation": "https://github.com/vmware/vsphere-storage-for-docker",
  "entrypoint": ["/usr/bin/python3", "-m", "$module", "--config", "/etc/vmdkops/$binary.conf",
                 "--executor_socket", "/run/vmdkops/vmdk-opsd.sock",
                 "--credential_file", "/run/vmdkops-credential/vm.credential"],
  "workdir": "/usr/lib/vmdkops",
  "interface": {"types": ["docker.volumedriver/1.0"], "socket": "$driver.sock"},
  "network": {"type": "host"},
  "propagatedMount": "$mountpoint",
  "linux": {"capabilities": ["CAP_SYS_ADMIN"], "allowAllDevices": true},
  "mounts": [
    {"name": "dev", "source": "/dev", "destination": "/dev", "type": "bind", "options": ["rbind", "shared"]},
    {"name": "executor", "description": "the folder of vmdk-opsd's socket", "source": "/var/lib/vmdkops/run",
     "destination": "/run/vmdkops", "type": "bind", "options": ["rbind"], "settable": ["source"]},
    {"name": "credential", "description": "this VM's credential file", "source": "/var/lib/vmdkops/local-vm.credential",
     "destination": "/run/vmdkops-credential/vm.credential", "type": "bind", "options": ["bind", "ro"],
     "settable": ["source"]},
    {"name": "config", "description": "the folder of $binary.conf", "source": "/etc/vmdkops",
     "destination": "/etc/vmdkops", "type": "bind", "options": ["rbind", "ro"], "settable": ["source"]},
    {"name": "log", "description": "the log folder", "source": "/var/log", "destination": "/var/log",
     "type": "bind", "options": ["rbind"], "settable": ["source"]},
    {"name": "docker", "description": "Docker's API socket (restart recovery)", "source": "/var/run/docker.sock",
     "destination": "/var/run/docker.sock", "type": "bind", "options": ["bind"], "settable": ["source"]}
  ],
  "env": [
    {"name": "VDVS_LOG_LEVEL", "description": "panic, fatal, error, warn, info or debug", "value": "info",
     "settable": ["value"]},
    {"name": "VDVS_SOCKET_GID", "description": "group owning the plugin's socket", "value": "root",
     "settable": ["value"]},
    {"name": "VDVS_BUILD", "description": "this build", "value": "$build_id"}
  ],
  "args": {"name": "args", "description": "more command line flags", "value": [], "settable": ["value"]}
}
EOF
size=$(du -sm "$rootfs" | cut -f1)
docker plugin rm -f "$tag" >/dev/null 2>&1 || true
docker plugin create "$tag" "$work" >/dev/null
echo "built $tag ($build_id): rootfs $size MB in $(( ($(date +%s%N) - start) / 1000000 )) ms"
if [ "$push" = 1 ]; then
    docker plugin push "$tag" >/dev/null
    echo "pushed $tag"
fi
