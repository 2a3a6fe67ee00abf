"""A volume's file server (D13): the one-replica swarm service
``vFileServer<v>`` runs Samba over the base volume ``_vF_<v>`` at
``/vfilepath``, its port published in host mode, so that clients reach
``//<node address>:<port>/vfileshare`` with or without a routing mesh. Only a
swarm manager can start or stop a service.

The share's password reaches the server as a swarm secret (mode 0400 at
``/run/secrets/vfile-password`` in its container, made with the service and
removed with it): never in its environment or on a command line, so
``docker service inspect`` does not show it."""

import base64
import logging
import os
import secrets
import time

from ..docker_api import DockerError, DockerUnavailable, filters, quote

log = logging.getLogger("vmdkops.plugin")
SERVICE_PREFIX = "vFileServer"
BASE_PREFIX = "_vF_"
VOLUME_LABEL = "vmdkops.vfile.volume"
PASSWORD_FILE = "vfile-password"  # under /run/secrets in the server's container
SMB_PORT = 445
POLL = 0.2


class ServerFailed(Exception):
    pass


def service_name(volume):
    return SERVICE_PREFIX + volume


def base_volume(volume):
    return BASE_PREFIX + volume


class FileServers:
    def __init__(self, docker, config):
        self.docker = docker
        self.config = config

    def find(self, volume):
        found = self.docker.get(f"/services?filters={filters(name=service_name(volume))}")
        return next((s for s in found or [] if s["Spec"]["Name"] == service_name(volume)), None)

    def start(self, volume, user, password, timeout):
        """(node address, published port) of the volume's running file
        server, started if there is none; ``ServerFailed`` after ``timeout``."""
        service = self.find(volume)
        if service is None:
            # By image ID: a swarm task pulls an image named by a tag first, and
            # that waits on the registry (every node loads the same image).
            image = self.docker.get(f"/images/{quote(self.config.SambaImage)}/json")["Id"]
            secret = self._password_secret(volume, password)
            spec = {
                "Name": service_name(volume),
                "Labels": {VOLUME_LABEL: volume},
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": image,
                        "Env": [f"VFILE_USER={user}", f"VFILE_PASSWORD_FILE=/run/secrets/{PASSWORD_FILE}"],
                        "Secrets": [dict(secret, File={"Name": PASSWORD_FILE, "UID": "0", "GID": "0",
                                                       "Mode": 0o400})],
                        "Mounts": [{"Type": "volume", "Source": base_volume(volume), "Target": "/vfilepath",
                                    "VolumeOptions": {"DriverConfig": {"Name": self.config.InternalDriver}}}]},
                    "RestartPolicy": {"Condition": "any", "Delay": 1_000_000_000}},
                "Mode": {"Replicated": {"Replicas": 1}},
                "EndpointSpec": {"Mode": "dnsrr", "Ports": [
                    {"Protocol": "tcp", "TargetPort": SMB_PORT, "PublishMode": "host"}]}}
            try:
                created = self.docker.post("/services/create", spec)
            except (DockerError, DockerUnavailable) as exc:
                self.remove_secrets(volume)
                raise ServerFailed(f"Failed to create file server for volume {volume}. Reason: {exc}") from None
            service = {"ID": created["ID"]}
            log.info("Created file server service=%s for volume %s", service_name(volume), volume)
        deadline = time.monotonic() + timeout
        while True:
            found = self.running(service["ID"])
            if found is not None:
                log.info("SMBServer for vol %s has been started successfully", volume)
                return found
            if time.monotonic() > deadline:
                raise ServerFailed(f"Timeout reached while waiting for file server container for volume {volume}")
            time.sleep(POLL)

    def running(self, service_id):
        """(node address, port) of the service's running task, or None."""
        for task in self._tasks(service_id) or []:
            # A task of a node that died stays "running" until swarm hears from it.
            if task.get("Status", {}).get("State") != "running" or task.get("DesiredState") != "running":
                continue
            ports = task["Status"].get("PortStatus", {}).get("Ports") or []
            port = next((p.get("PublishedPort") for p in ports if p.get("TargetPort") == SMB_PORT), None)
            if not port:
                continue
            node = self.docker.get(f"/nodes/{quote(task['NodeID'])}").get("Status", {})
            if node.get("State") == "ready" and node.get("Addr") not in (None, "", "0.0.0.0"):
                return node["Addr"], port
        return None

    def stop(self, volume, timeout):
        """Remove the volume's file server and wait until its task is gone
        (the base volume is let go with it); no service is not an error."""
        service = self.find(volume)
        if service is None:
            return
        try:
            self.docker.delete(f"/services/{service['ID']}")
        except DockerError as exc:
            if exc.status != 404:
                raise ServerFailed(f"Failed to stop file server for volume {volume}: {exc}") from None
        deadline = time.monotonic() + timeout
        while self.find(volume) is not None or self._tasks(service["ID"]) or self._base_held(volume):
            if time.monotonic() > deadline:
                raise ServerFailed(f"Timeout reached while waiting for file server of volume {volume} to stop")
            time.sleep(POLL)
        self.remove_secrets(volume)
        log.info("SMBServer for vol %s has been stopped successfully", volume)

    def _password_secret(self, volume, password):
        """A new swarm secret of the share's password (any left by a server
        that failed to start goes first): {"SecretID", "SecretName"}."""
        self.remove_secrets(volume)
        name = f"{service_name(volume)}-{secrets.token_hex(4)}"
        try:
            made = self.docker.post("/secrets/create", {
                "Name": name, "Labels": {VOLUME_LABEL: volume},
                "Data": base64.b64encode(password.encode()).decode()})
        except (DockerError, DockerUnavailable) as exc:
            raise ServerFailed(f"Failed to create the password secret of volume {volume}: {exc}") from None
        return {"SecretID": made["ID"], "SecretName": name}

    def remove_secrets(self, volume):
        found = self.docker.get(f"/secrets?filters={filters(label=[f'{VOLUME_LABEL}={volume}'])}") or []
        for secret in found:
            try:
                self.docker.delete(f"/secrets/{secret['ID']}")
            except DockerError as exc:
                if exc.status != 404:
                    log.warning("Could not remove the secret %s of volume %s: %s",
                                secret["Spec"]["Name"], volume, exc)

    def base_status(self, volume, name=None):
        """The internal driver's status of a base volume (or of the volume
        ``name``), {} when this node cannot see it."""
        try:
            return self.docker.get(f"/volumes/{quote(name or base_volume(volume))}").get("Status") or {}
        except DockerError:
            return {}

    def _base_held(self, volume):
        """Whether the base volume is still attached (the task's container is
        stopping), as the internal driver tells (the vsphere driver does)."""
        return self.base_status(volume).get("status") == "attached"

    def _tasks(self, service_id):
        try:
            return self.docker.get(f"/tasks?filters={filters(service=service_id)}")
        except DockerError as exc:
            if exc.status == 404:  # the service is gone, and its tasks with it
                return []
            raise

    def volumes_with_secrets(self):
        """The volumes that have a password secret."""
        found = self.docker.get(f"/secrets?filters={filters(label=[VOLUME_LABEL])}") or []
        return {s["Spec"]["Labels"][VOLUME_LABEL] for s in found}

    def volumes_served(self):
        """The volumes whose file server service exists."""
        found = self.docker.get(f"/services?filters={filters(name=SERVICE_PREFIX)}") or []
        return [s["Spec"]["Name"][len(SERVICE_PREFIX):] for s in found
                if s["Spec"]["Name"].startswith(SERVICE_PREFIX)]

    def ensure_image(self):
        """Load the Samba image from its tarball when this node's Docker lacks it."""
        try:
            self.docker.get(f"/images/{quote(self.config.SambaImage)}/json")
            return
        except DockerError as exc:
            if exc.status != 404:
                raise
        tar = self.config.SambaImageTar
        if not os.path.exists(tar):
            log.warning("The file server image %s is missing and %s does not exist", self.config.SambaImage, tar)
            return
        with open(tar, "rb") as f:
            self.docker.request("POST", "/images/load?quiet=1", body=f, timeout=600, raw=True)
        log.info("Loaded the file server image %s from %s", self.config.SambaImage, tar)
