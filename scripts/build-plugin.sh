#!/bin/bash
# Build a plugin as a Docker managed (v2) plugin from this machine's own
# Python (standard library only) and tools, with no registry and no
# internet: a rootfs, its config.json, then `docker plugin create`; with
# --push, `docker plugin push`. DOCKER_HOST is honoured.
#
#   scripts/build-plugin.sh [--driver vsphere|vfile] [--tag REF] [--push] [--samba-image TAR]
#
# REF defaults to vmdkops/vsphere-storage-for-docker:<version> (vmdkops/vfile:<version>).
# The vfile rootfs also carries etcd, smbnetfs and the file server's image,
# built by scripts/build-vfile-smb-image.sh or taken from its tarball TAR.
# Install them as the original's were, with the host paths they need:
#   docker plugin install --grant-all-permissions --alias vsphere REF \
#       executor.source=/var/lib/vmdkops/run credential.source=/var/lib/vmdkops/local-vm.credential
#   docker plugin install --grant-all-permissions --alias vfile REF [state.source=/var/lib/vfile]
set -euo pipefail

driver=vsphere tag="" push=0 samba_image=""
while [ $# -gt 0 ]; do
    case "$1" in
        --driver) driver=$2; shift 2 ;;
        --tag) tag=$2; shift 2 ;;
        --push) push=1; shift ;;
        --samba-image) samba_image=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-plugin.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
tools="/bin/sh mount umount"
case "$driver" in
    vsphere) binary=vsphere-storage-for-docker; module=plugin.vsphere; mountpoint=/mnt/vmdk
             tools="$tools losetup blkid blockdev mke2fs mkfs.ext2 mkfs.ext3 mkfs.ext4 mkfs.xfs e2fsck
                    resize2fs xfs_growfs" ;;
    vfile) binary=vfile; module=plugin.vfile; mountpoint=/mnt/vfile
           tools="$tools etcd smbnetfs unshare" ;;
    *) echo "build-plugin.sh: --driver must be vsphere or vfile, not $driver" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$repo/vmdkops_admin/__init__.py")
tag=${tag:-vmdkops/$binary:$version}
python=$(readlink -f /usr/bin/python3)
stdlib=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
tools="$python $tools"
libdir=$(dirname "$(ldd "$python" | sed -n 's/.*libc\.so\.6 => \([^ ]*\).*/\1/p')")

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
modules=()
if [ "$driver" = vfile ]; then  # the SMB client's modules, loaded at run time
    mapfile -t modules < <(find "$libdir/samba" -name '*.so*' 2>/dev/null)
    for lib in "${modules[@]}"; do cp --parents -L "$lib" "$rootfs"; done
fi
for file in "${binaries[@]}" "${modules[@]}" "$stdlib"/lib-dynload/*.so; do
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
mkdir -p "$rootfs"{/dev,/proc,/sys,/tmp,/run/docker/plugins,/etc/vmdkops,/var/log,/var/run,$mountpoint}
touch "$rootfs/var/run/docker.sock"

# What differs: the entry point's flags, the host paths, the settings.
setting() {  # a settable env value: name, description, default
    printf '    {"name": "%s", "description": "%s", "value": "%s", "settable": ["value"]},\n' "$1" "$2" "$3"
}
bind() {  # a settable bind mount: name, description, default source, destination, options
    printf '    {"name": "%s", "description": "%s", "source": "%s", "destination": "%s", "type": "bind",\n' \
        "$1" "$2" "$3" "$4"
    printf '     "options": %s, "settable": ["source"]},\n' "$5"
}
settings=$(setting VDVS_LOG_LEVEL "panic, fatal, error, warn, info or debug" info
           setting VDVS_SOCKET_GID "group owning the plugin's socket" root)
if [ "$driver" = vsphere ]; then
    mkdir -p "$rootfs"{/run/vmdkops,/run/vmdkops-credential}
    touch "$rootfs/run/vmdkops-credential/vm.credential"
    flags='"--executor_socket", "/run/vmdkops/vmdk-opsd.sock", "--credential_file", "/run/vmdkops-credential/vm.credential"'
    # The disks it is given appear as new device nodes: all of /dev, as it changes.
    linux='{"capabilities": ["CAP_SYS_ADMIN"], "allowAllDevices": true}'
    mounts='    {"name": "dev", "source": "/dev", "destination": "/dev", "type": "bind", "options": ["rbind", "shared"]},
'$(bind executor "the folder of vmdk-opsd's socket" /var/lib/vmdkops/run /run/vmdkops '["rbind"]'
             bind credential "this VM's credential file" /var/lib/vmdkops/local-vm.credential \
                 /run/vmdkops-credential/vm.credential '["bind", "ro"]')
else
    mkdir -p "$rootfs"{/var/lib/vfile,/var/lib/docker-swarm}
    touch "$rootfs/etc/hosts"  # etcd's own hosts file is mounted over it
    if [ -z "$samba_image" ]; then
        samba_image=$work/vfile-smb.tar
        "$repo/scripts/build-vfile-smb-image.sh" --out "$samba_image" >/dev/null
    fi
    gzip -1 -c "$samba_image" > "$rootfs/usr/lib/vmdkops/vfile-smb.tar.gz"  # docker load takes it
    rm -f "$work/vfile-smb.tar"
    flags='"--state_dir", "/var/lib/vfile", "--samba_image_tar", "/usr/lib/vmdkops/vfile-smb.tar.gz", "--etcd_binary", "'$(command -v etcd)'", "--swarm_certificates", "/var/lib/docker-swarm/certificates"'
    linux='{"capabilities": ["CAP_SYS_ADMIN"], "devices": [{"path": "/dev/fuse"}]}'  # smbnetfs's
    mounts=$(bind state "etcd's data and the SMB clients' settings" /var/lib/vfile /var/lib/vfile '["rbind"]'
             bind swarm "the swarm folder of Docker's data root: the node's certificates secure etcd" \
                 /var/lib/docker/swarm /var/lib/docker-swarm '["rbind", "ro"]')
    settings="$settings
$(setting VFILE_TIMEOUT_IN_SECOND "seconds a file server may take to start or stop" 45
  setting VFILE_MOUNT_METHOD "how nodes mount a share: cifs or smbnetfs" cifs
  setting VFILE_DEAD_NODE_GRACE "seconds a node the swarm reports down keeps its mounts counted" 60
  setting VFILE_ETCD_ENDPOINTS "[https://]host:port,... of an existing etcd cluster, over TLS unless http:// is given (empty: etcd runs on the managers)" ""
  setting VFILE_ETCD_CLIENT_PORT "etcd's client port on the managers" 2379
  setting VFILE_ETCD_PEER_PORT "etcd's peer port on the managers" 2380)"
fi

cat > "$work/config.json" <<EOF
{
  "description": "vmdkops $driver Docker Volume plugin (Docker volumes backed by VMDK disks)",
  "documentation": "https://github.com/vmware/vsphere-storage-for-docker",
  "entrypoint": ["/usr/bin/python3", "-m", "$module", "--config", "/etc/vmdkops/$binary.conf", $flags],
  "workdir": "/usr/lib/vmdkops",
  "interface": {"types": ["docker.volumedriver/1.0"], "socket": "$driver.sock"},
  "network": {"type": "host"},
  "propagatedMount": "$mountpoint",
  "linux": $linux,
  "mounts": [
$mounts
$(bind config "the folder of $binary.conf (optional file)" /etc /etc/vmdkops '["rbind", "ro"]'
  bind log "the log folder" /var/log /var/log '["rbind"]')
$(bind docker "Docker's API socket" /var/run/docker.sock /var/run/docker.sock '["bind"]' | sed '$ s/,$//')
  ],
  "env": [
$settings
    {"name": "VDVS_BUILD", "description": "this build", "value": "$build_id"}
  ],
  "args": {"name": "args", "description": "more command line flags", "value": [], "settable": ["value"]}
}
EOF
"$python" -m json.tool "$work/config.json" >/dev/null
size=$(du -sm "$rootfs" | cut -f1)
docker plugin rm -f "$tag" >/dev/null 2>&1 || true
docker plugin create "$tag" "$work" >/dev/null
echo "built $tag ($build_id): rootfs $size MB in $(( ($(date +%s%N) - start) / 1000000 )) ms"
if [ "$push" = 1 ]; then
    docker plugin push "$tag" >/dev/null
    echo "pushed $tag"
fi
