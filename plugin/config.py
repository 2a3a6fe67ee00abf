"""The plugins' configuration: the JSON file (keys matched ignoring case as
the original did), then the environment, then the command line, each
overriding the one before. Unknown keys are warned about, never silently
ignored. ``Config`` is the vsphere plugin's, ``VfileConfig`` the vfile
plugin's; both share the common keys and the way they are read."""

import argparse
import json
import logging
import os
from dataclasses import dataclass, field, fields

log = logging.getLogger("vmdkops.plugin")
LOG_LEVELS = ("panic", "fatal", "error", "warn", "warning", "info", "debug")


@dataclass
class Settings:
    """What every plugin has: its driver name, socket, mounts, log and Docker."""
    Driver: str = ""
    LogPath: str = ""
    MaxLogSizeMb: int = 10
    MaxLogFiles: int = 10
    MaxLogAgeDays: int = 28  # accepted for compatibility; rotation is by size
    LogLevel: str = "info"
    GroupID: str = "root"
    SocketDir: str = "/run/docker/plugins"  # where Docker looks for plugin sockets
    MountRoot: str = ""
    DockerSocket: str = "/var/run/docker.sock"
    warnings: list = field(default_factory=list, repr=False)

    PROGRAM = ""
    DEFAULT_CONFIG = ""
    DESCRIPTION = ""
    ENVIRONMENT = {"VDVS_LOG_LEVEL": "LogLevel", "VDVS_SOCKET_GID": "GroupID"}
    # flag -> (key, help)
    FLAGS = {"driver": ("Driver", "driver name: the socket is <socket dir>/<driver>.sock"),
             "group": ("GroupID", "group (name or gid) owning the socket (root)"),
             "log_level": ("LogLevel", "panic, fatal, error, warn, info or debug (info)"),
             "log_path": ("LogPath", "log file"),
             "mount_root": ("MountRoot", "where volumes are mounted"),
             "socket_dir": ("SocketDir", "where Docker looks for plugin sockets (/run/docker/plugins)"),
             "docker_socket": ("DockerSocket", "Docker's API socket (/var/run/docker.sock)")}
    # Keys of the original that this plugin accepts and does not use.
    IGNORED = ("target", "project", "host")
    # Flags that make the program do something else than serve (flag -> help).
    ACTIONS = {}

    @property
    def socket_path(self):
        return os.path.join(self.SocketDir, f"{self.Driver}.sock")

    def check(self):
        if self.LogLevel.lower() not in LOG_LEVELS:
            raise ConfigError(f'Failed to parse log level: not a valid level: "{self.LogLevel}"')


@dataclass
class Config(Settings):
    """The vsphere plugin (``vsphere-storage-for-docker``)."""
    Driver: str = "vsphere"
    LogPath: str = "/var/log/vsphere-storage-for-docker.log"
    MountRoot: str = "/mnt/vmdk"
    # How to reach the executor and who this VM is.
    ExecutorSocket: str = "/var/lib/vmdkops/run/vmdk-opsd.sock"
    ExecutorTcp: str = ""            # host:port, with TLS
    ExecutorCaFile: str = ""         # CA bundle for ExecutorTcp
    ExecutorVsockPort: int = 0       # 0: not used
    CredentialFile: str = "/var/lib/vmdkops/local-vm.credential"
    Devices: str = "local"           # local | esx: how attached disks are found
    ReportInterval: int = 5          # seconds between reports that this VM's plugin is alive

    PROGRAM = "vsphere-storage-for-docker"
    DEFAULT_CONFIG = "/etc/vsphere-storage-for-docker.conf"
    DESCRIPTION = ("The vSphere Docker volume plugin: serves Docker's volume plugin protocol on a unix "
                   "socket and asks vmdk-opsd for the disks.")
    ENVIRONMENT = dict(Settings.ENVIRONMENT, VMDKOPS_EXECUTOR_SOCKET="ExecutorSocket",
                       VMDKOPS_CREDENTIAL_FILE="CredentialFile")
    FLAGS = dict(Settings.FLAGS,
                 executor_socket=("ExecutorSocket", "vmdk-opsd's unix socket"),
                 executor_tcp=("ExecutorTcp", "vmdk-opsd's TCP address host:port (TLS)"),
                 credential_file=("CredentialFile", "file holding this VM's credential"),
                 devices=("Devices", "how attached disks are found: local or esx (local)"))
    IGNORED = Settings.IGNORED + ("internaldriver",)

    def check(self):
        super().check()
        if self.Driver == "vmdk":
            self.warnings.append('Using deprecated "vmdk" driver, use "vsphere" driver instead - continuing...')
            self.Driver = "vsphere"
        if self.Devices not in ("local", "esx"):
            raise ConfigError(f"Devices must be 'local' or 'esx', not {self.Devices!r}")
        if self.ReportInterval < 1:
            raise ConfigError(f"ReportInterval must be at least 1 (seconds), not {self.ReportInterval}")


@dataclass
class VfileConfig(Settings):
    """The vfile plugin (``vfile``): shared volumes over etcd and Samba."""
    Driver: str = "vfile"
    LogPath: str = "/var/log/vfile.log"
    MountRoot: str = "/mnt/vfile"
    InternalDriver: str = "vsphere"  # the driver of the base volumes _vF_<name>
    EtcdEndpoints: str = ""          # [https://]host:port,...: an existing cluster; empty: run etcd here
    EtcdCA: str = ""                 # with EtcdEndpoints: the CA, certificate and key that reach it
    EtcdCert: str = ""
    EtcdKey: str = ""
    SwarmCertificates: str = ""      # the node's swarm certificates (default: Docker's data root's)
    EtcdClientPort: int = 2379
    EtcdPeerPort: int = 2380
    EtcdLocalPort: int = 12379       # etcd's own client port, on a manager's loopback, behind the gate
    MountMethod: str = "cifs"        # cifs | smbnetfs
    ServiceTimeout: int = 45         # seconds a file server may take to start or stop
    DeadNodeGrace: int = 60          # seconds a node the swarm reports down keeps its mounts counted
    StateDir: str = "/var/lib/vfile"  # etcd's data, the SMB clients' settings
    SambaImage: str = ""             # the file server image (default: vmdkops/vfile-smb:<version>)
    SambaImageTar: str = "/usr/lib/vmdkops/vfile-smb.tar"  # loaded where the image is missing
    EtcdBinary: str = "/usr/bin/etcd"

    PROGRAM = "vfile"
    DEFAULT_CONFIG = "/etc/vfile.conf"
    DESCRIPTION = ("The vfile Docker volume plugin (vSphere Shared Storage for Docker): volumes that "
                   "containers on many Docker Swarm nodes mount at once, kept in etcd and served by "
                   "a Samba file server running as a swarm service over a base volume of the "
                   "internal driver.")
    ENVIRONMENT = dict(Settings.ENVIRONMENT, VFILE_ETCD_CLIENT_PORT="EtcdClientPort",
                       VFILE_ETCD_PEER_PORT="EtcdPeerPort", VFILE_TIMEOUT_IN_SECOND="ServiceTimeout",
                       VFILE_ETCD_ENDPOINTS="EtcdEndpoints", VFILE_MOUNT_METHOD="MountMethod",
                       VFILE_DEAD_NODE_GRACE="DeadNodeGrace")
    FLAGS = dict(Settings.FLAGS,
                 InternalDriver=("InternalDriver", "driver of the base volumes (vsphere)"),
                 etcd_endpoints=("EtcdEndpoints", "[https://]host:port,... of an existing etcd cluster, "
                                                  "over TLS unless http:// is given (default: run etcd "
                                                  "on the swarm managers)"),
                 etcd_ca=("EtcdCA", "with etcd_endpoints: the CA that signed the cluster's certificates"),
                 etcd_cert=("EtcdCert", "with etcd_endpoints: this node's client certificate"),
                 etcd_key=("EtcdKey", "with etcd_endpoints: the client certificate's key"),
                 swarm_certificates=("SwarmCertificates", "the node's swarm certificates, which secure etcd "
                                                          "(default: swarm/certificates in Docker's data root)"),
                 etcd_client_port=("EtcdClientPort", "etcd's client port on the managers (2379)"),
                 etcd_peer_port=("EtcdPeerPort", "etcd's peer port on the managers (2380)"),
                 etcd_local_port=("EtcdLocalPort", "etcd's own client port on a manager's loopback, "
                                                   "behind the plugin's gate on the client port (12379)"),
                 mount_method=("MountMethod", "how nodes mount a share: cifs (mount -t cifs) or "
                                              "smbnetfs (FUSE) (cifs)"),
                 service_timeout=("ServiceTimeout", "seconds a file server may take to start (45)"),
                 dead_node_grace=("DeadNodeGrace", "seconds a node the swarm reports down keeps its mounts "
                                                   "of shared volumes counted (60)"),
                 state_dir=("StateDir", "etcd's data and the SMB clients' settings (/var/lib/vfile)"),
                 samba_image=("SambaImage", "the file server's image (vmdkops/vfile-smb:<version>)"),
                 samba_image_tar=("SambaImageTar", "the image's tarball, loaded where it is missing"),
                 etcd_binary=("EtcdBinary", "the etcd program (/usr/bin/etcd)"))
    ACTIONS = {"check": "do not serve: list what etcd, the file servers and the base volumes disagree on, "
                        "with a remedy for each (exit 0 when they agree, 1 when not)",
               "repair": "with --check: repair what is safe (nothing that holds data is deleted)"}

    def check(self):
        super().check()
        if self.Driver != "vfile":
            raise ConfigError(f"Unknown driver or invalid/missing driver options, exiting - {self.Driver}")
        if self.MountMethod not in ("cifs", "smbnetfs"):
            raise ConfigError(f"MountMethod must be 'cifs' or 'smbnetfs', not {self.MountMethod!r}")
        if self.DeadNodeGrace < 0:
            raise ConfigError(f"DeadNodeGrace must be a number of seconds, not {self.DeadNodeGrace}")
        if self.ServiceTimeout <= 0:
            raise ConfigError(f"ServiceTimeout must be a positive number of seconds, not {self.ServiceTimeout}")
        schemes = {e.strip().partition("://")[0] if "://" in e else "https"
                   for e in self.EtcdEndpoints.split(",") if e.strip()}
        if not schemes <= {"http", "https"} or len(schemes) > 1:
            raise ConfigError(f"EtcdEndpoints must all be https://host:port (or host:port), or all "
                              f"http://host:port, not {self.EtcdEndpoints!r}")
        if schemes == {"https"} and not (self.EtcdCA and self.EtcdCert and self.EtcdKey):
            raise ConfigError("EtcdEndpoints over TLS need EtcdCA, EtcdCert and EtcdKey (or give "
                              "http://host:port to reach the cluster without TLS)")
        if not self.SambaImage:
            from . import __version__

            self.SambaImage = f"vmdkops/vfile-smb:{__version__}"


class ConfigError(Exception):
    pass


def _keys(kind):
    return {f.name.lower(): f for f in fields(kind) if f.name != "warnings"}


def _set(config, key, value, source):
    spec = _keys(type(config))[key.lower()]
    if spec.type in (int, "int"):
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {spec.name} must be a whole number, not {value!r}") from None
    elif not isinstance(value, str):
        raise ConfigError(f"{source}: {spec.name} must be a string, not {value!r}")
    setattr(config, spec.name, value)


def load(path, environ=None, flags=None, kind=Config):
    """The configuration of a ``kind`` of plugin from the file at ``path`` (a
    missing file means the defaults), the environment and the parsed flags."""
    config = kind()
    environ = os.environ if environ is None else environ
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        config.warnings.append(f"No config file found at {path}. Using defaults.")
        data = {}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Failed to load config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Failed to load config file {path}: not a JSON object")
    keys = _keys(kind)
    for key, value in data.items():
        if key.lower() in keys:
            _set(config, key, value, path)
        elif key.lower() not in kind.IGNORED:
            config.warnings.append(f"Unknown key {key!r} in {path} is ignored")
    for variable, key in kind.ENVIRONMENT.items():
        if environ.get(variable):
            _set(config, key, environ[variable], variable)
    for flag, (key, _) in kind.FLAGS.items():
        value = getattr(flags, flag, None) if flags is not None else None
        if value is not None:
            _set(config, key, value, f"--{flag}")
    config.check()
    return config


def parser(kind=Config):
    p = argparse.ArgumentParser(
        prog=kind.PROGRAM, description=kind.DESCRIPTION,
        epilog=f"Settings come from the JSON file {kind.DEFAULT_CONFIG} (keys: "
               f"{', '.join(f.name for f in fields(kind) if f.name != 'warnings')}), then the "
               f"environment ({', '.join(kind.ENVIRONMENT)}), then these options.")
    p.add_argument("--config", default=kind.DEFAULT_CONFIG, help=f"config file (default {kind.DEFAULT_CONFIG})")
    for flag, text in kind.ACTIONS.items():
        p.add_argument(f"--{flag}", action="store_true", help=text)
    defaults = kind()
    for flag, (key, text) in kind.FLAGS.items():
        default = getattr(defaults, key)
        shown = f" (default {default})" if default not in ("", None) and "(" not in text else ""
        p.add_argument(f"--{flag}", help=text + shown)
    return p
