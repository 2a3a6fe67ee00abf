"""The plugin's configuration: the JSON file (``/etc/vsphere-storage-for-docker.conf``,
keys matched ignoring case as the original did), then the environment, then
the command line, each overriding the one before. Unknown keys are warned
about, never silently ignored."""

import argparse
import json
import logging
import os
from dataclasses import dataclass, field, fields

DEFAULT_CONFIG = "/etc/vsphere-storage-for-docker.conf"
log = logging.getLogger("vmdkops.plugin")


@dataclass
class Config:
    Driver: str = "vsphere"
    LogPath: str = "/var/log/vsphere-storage-for-docker.log"
    MaxLogSizeMb: int = 10
    MaxLogFiles: int = 10
    MaxLogAgeDays: int = 28  # accepted for compatibility; rotation is by size
    LogLevel: str = "info"
    GroupID: str = "root"
    # Where the plugin's socket and mounts live (one plugin per Docker host).
    SocketDir: str = "/run/docker/plugins"
    MountRoot: str = "/mnt/vmdk"
    # How to reach the executor and who this VM is.
    ExecutorSocket: str = "/var/lib/vmdkops/run/vmdk-opsd.sock"
    ExecutorTcp: str = ""            # host:port, with TLS
    ExecutorCaFile: str = ""         # CA bundle for ExecutorTcp
    ExecutorVsockPort: int = 0       # 0: not used
    CredentialFile: str = "/var/lib/vmdkops/local-vm.credential"
    Devices: str = "local"           # local | esx: how attached disks are found
    DockerSocket: str = "/var/run/docker.sock"
    warnings: list = field(default_factory=list, repr=False)

    @property
    def socket_path(self):
        return os.path.join(self.SocketDir, f"{self.Driver}.sock")


KEYS = {f.name.lower(): f for f in fields(Config) if f.name != "warnings"}
ENVIRONMENT = {"VDVS_LOG_LEVEL": "LogLevel", "VDVS_SOCKET_GID": "GroupID",
               "VMDKOPS_EXECUTOR_SOCKET": "ExecutorSocket", "VMDKOPS_CREDENTIAL_FILE": "CredentialFile"}
FLAGS = {"driver": "Driver", "group": "GroupID", "log_level": "LogLevel", "mount_root": "MountRoot",
         "socket_dir": "SocketDir", "executor_socket": "ExecutorSocket",
         "executor_tcp": "ExecutorTcp", "credential_file": "CredentialFile", "devices": "Devices",
         "docker_socket": "DockerSocket", "log_path": "LogPath"}


class ConfigError(Exception):
    pass


def _set(config, key, value, source):
    spec = KEYS[key.lower()]
    if spec.type in (int, "int"):
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {spec.name} must be a whole number, not {value!r}") from None
    elif not isinstance(value, str):
        raise ConfigError(f"{source}: {spec.name} must be a string, not {value!r}")
    setattr(config, spec.name, value)


def load(path, environ=None, flags=None):
    """The configuration from the file at ``path`` (a missing file means the
    defaults), the environment and the parsed flags."""
    config = Config()
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
    for key, value in data.items():
        if key.lower() in KEYS:
            _set(config, key, value, path)
        elif key.lower() not in ("target", "project", "host", "internaldriver"):
            config.warnings.append(f"Unknown key {key!r} in {path} is ignored")
    for variable, key in ENVIRONMENT.items():
        if environ.get(variable):
            _set(config, key, environ[variable], variable)
    for flag, key in FLAGS.items():
        value = getattr(flags, flag, None) if flags is not None else None
        if value is not None:
            _set(config, key, value, f"--{flag}")
    if config.Driver == "vmdk":
        config.warnings.append('Using deprecated "vmdk" driver, use "vsphere" driver instead - continuing...')
        config.Driver = "vsphere"
    if config.LogLevel.lower() not in ("panic", "fatal", "error", "warn", "warning", "info", "debug"):
        raise ConfigError(f'Failed to parse log level: not a valid level: "{config.LogLevel}"')
    if config.Devices not in ("local", "esx"):
        raise ConfigError(f"Devices must be 'local' or 'esx', not {config.Devices!r}")
    return config


def parser():
    p = argparse.ArgumentParser(
        prog="vsphere-storage-for-docker",
        description="The vSphere Docker volume plugin: serves Docker's volume plugin protocol "
                    "on a unix socket and asks vmdk-opsd for the disks.")
    p.add_argument("--config", default=DEFAULT_CONFIG, help=f"config file (default {DEFAULT_CONFIG})")
    p.add_argument("--driver", help="driver name: the socket is <socket dir>/<driver>.sock (vsphere)")
    p.add_argument("--group", help="group (name or gid) owning the socket (root)")
    p.add_argument("--log_level", help="panic, fatal, error, warn, info or debug (info)")
    p.add_argument("--log_path", help="log file")
    p.add_argument("--mount_root", help="where volumes are mounted (/mnt/vmdk)")
    p.add_argument("--socket_dir", help="where Docker looks for plugin sockets (/run/docker/plugins)")
    p.add_argument("--executor_socket", help="vmdk-opsd's unix socket")
    p.add_argument("--executor_tcp", help="vmdk-opsd's TCP address host:port (TLS)")
    p.add_argument("--credential_file", help="file holding this VM's credential")
    p.add_argument("--devices", help="how attached disks are found: local or esx (local)")
    p.add_argument("--docker_socket", help="Docker's API socket, for recovery (/var/run/docker.sock)")
    return p
