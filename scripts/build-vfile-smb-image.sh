#!/usr/bin/env bash
# Builds the vfile file server image, vmdkops/vfile-smb:<version>, from this
# machine's Debian Samba (no registry, no Docker daemon needed): a root
# filesystem with smbd, smbpasswd, a shell and the libraries they load, and
# an entry point that serves /vfilepath as the share "vfileshare" to the user
# $VFILE_USER with the password in the file $VFILE_PASSWORD_FILE (a swarm
# secret), over SMB3 with encryption required. It is written as a tarball
# in `docker save` form, which the vfile plugin loads into a node's Docker
# when the image is missing (or: docker load -i TAR).
#
#   scripts/build-vfile-smb-image.sh [--tag REF] [--out TAR]
#
# Defaults: --tag vmdkops/vfile-smb:<version>, --out /usr/lib/vmdkops/vfile-smb.tar
# (the plugin's SambaImageTar). Needs Debian's samba (apt-get install samba).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' plugin/__init__.py)
tag="vmdkops/vfile-smb:$version"
out=/usr/lib/vmdkops/vfile-smb.tar
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-vfile-smb-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
for program in /usr/sbin/smbd /usr/bin/smbpasswd; do
    [ -x "$program" ] || { echo "build-vfile-smb-image.sh: $program is missing: apt-get install samba" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{bin,etc/samba,tmp,run,vfilepath,usr/local/bin}
chmod 1777 "$root/tmp"

# The programs, every library they link, and Samba's and ldb's modules (loaded at run time).
copy() {  # a file and every library it links
    cp --parents -L -n "$1" "$root" 2>/dev/null || true
    for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true); do
        cp --parents -L -n "$lib" "$root" 2>/dev/null || true
    done
}
libdir=$(dirname "$(ldd /usr/sbin/smbd | sed -n 's/.*libc\.so\.6 => \([^ ]*\).*/\1/p')")
for program in /usr/sbin/smbd /usr/bin/smbpasswd /bin/sh /bin/mkdir /bin/cat; do
    copy "$program"
done
for module in $(find "$libdir/samba" "$libdir/ldb" -name '*.so*' 2>/dev/null); do
    copy "$module"
done
for folder in usr/share/samba usr/lib/locale/C.utf8; do
    if [ -d "/$folder" ]; then (cd / && cp -a --parents "$folder" "$root/"); fi
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"

cat > "$root/usr/local/bin/vfile-smb" <<'EOF'
#!/bin/sh
# The vfile file server: /vfilepath as the share "vfileshare", for one user,
# whose password is in a file (a swarm secret), never in the environment.
set -e
: "${VFILE_USER:=vfile}"
: "${VFILE_PASSWORD_FILE:?the share needs the file of its password (VFILE_PASSWORD_FILE)}"
mkdir -p /run/samba/private /run/samba/lock /run/samba/state /run/samba/cache /run/samba/pid \
    /run/samba/ncalrpc /var/log/samba/cores
cat > /etc/samba/smb.conf <<CONF
[global]
    workgroup = MYGROUP
    security = user
    server min protocol = SMB3
    smb encrypt = required
    disable netbios = yes
    smb ports = 445
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    passdb backend = tdbsam:/run/samba/private/passdb.tdb
    private dir = /run/samba/private
    lock directory = /run/samba/lock
    state directory = /run/samba/state
    cache directory = /run/samba/cache
    pid directory = /run/samba/pid
    ncalrpc dir = /run/samba/ncalrpc
    username map = /etc/samba/users.map
    log level = 1
[vfileshare]
    path = /vfilepath
    read only = no
    guest ok = no
    valid users = root
    force user = root
    veto files = /._*/.DS_Store/
CONF
echo "root = $VFILE_USER" > /etc/samba/users.map
password=$(cat "$VFILE_PASSWORD_FILE")
printf '%s\n%s\n' "$password" "$password" | smbpasswd -c /etc/samba/smb.conf -s -a root > /dev/null
unset password
exec smbd --foreground --no-process-group --debug-stdout -s /etc/samba/smb.conf
EOF
chmod 755 "$root/usr/local/bin/vfile-smb"

# docker save form: one layer, its config, a manifest naming the tag.
mkdir -p "$work/image/layer"
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$work/image/layer/layer.tar" .
layer_sha=$(sha256sum "$work/image/layer/layer.tar" | cut -d' ' -f1)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
arch=$(dpkg --print-architecture)
cat > "$work/config.json" <<EOF
{"architecture": "$arch", "os": "linux", "created": "$created",
 "config": {"Entrypoint": ["/usr/local/bin/vfile-smb"], "Env": ["PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "ExposedPorts": {"445/tcp": {}}, "Labels": {"org.opencontainers.image.title": "vfile file server"}},
 "rootfs": {"type": "layers", "diff_ids": ["sha256:$layer_sha"]},
 "history": [{"created": "$created", "created_by": "scripts/build-vfile-smb-image.sh"}]}
EOF
config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/image/$config_sha.json"
mv "$work/image/layer" "$work/image/$layer_sha"
printf '[{"Config": "%s.json", "RepoTags": ["%s"], "Layers": ["%s/layer.tar"]}]\n' \
    "$config_sha" "$tag" "$layer_sha" > "$work/image/manifest.json"
mkdir -p "$(dirname "$out")"
tar -C "$work/image" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "Built $tag: $out ($(du -h "$out" | cut -f1))"
