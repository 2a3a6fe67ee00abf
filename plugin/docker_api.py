"""Just enough of Docker's Engine API (over its unix socket) for the plugins:
which live containers use which volumes (recovery), and for vfile the swarm
(nodes, services, tasks), volumes of the internal driver and images."""

import http.client
import json
import os
import socket
import urllib.parse

API = "/v1.24"


class DockerUnavailable(Exception):
    """Docker did not answer."""


class DockerError(Exception):
    """Docker answered with an error; its message is for the user."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Docker:
    """A client of one Docker engine; one connection per request."""

    def __init__(self, socket_path, timeout=30.0):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method, url, body=None, timeout=None, raw=False):
        connection = _UnixConnection(self.socket_path, timeout or self.timeout)
        headers = {"Host": "localhost"}
        if body is not None and not isinstance(body, (bytes, bytearray)) and not hasattr(body, "read"):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif body is not None:
            headers["Content-Type"] = "application/x-tar"
        try:
            connection.request(method, API + url, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            raise DockerUnavailable(f"Can't connect to {self.socket_path} due to ({exc})") from None
        finally:
            connection.close()
        if response.status >= 400:
            try:
                message = json.loads(data).get("message") or data.decode(errors="replace")
            except (ValueError, AttributeError):
                message = data.decode(errors="replace").strip()
            raise DockerError(response.status, message)
        if raw:
            return data
        return json.loads(data) if data.strip() else None

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url, body=None, **kwargs):
        return self.request("POST", url, body if body is not None else {}, **kwargs)

    def delete(self, url, **kwargs):
        return self.request("DELETE", url, **kwargs)


def filters(**wanted):
    """A ``filters=`` query value: each key to a list of values."""
    return urllib.parse.quote(json.dumps({key: [value] if isinstance(value, str) else list(value)
                                          for key, value in wanted.items()}))


def quote(name):
    return urllib.parse.quote(name, safe="")


def volume_mounts(socket_path, driver, mount_root):
    """Volume names (as containers named them) of this driver that live
    containers use, one entry per container mount: mounts whose driver is
    this plugin (legacy or managed) or whose source is under the mount
    root. No Docker socket at all means no Docker running, so no container
    uses anything."""
    if not os.path.exists(socket_path):
        return []
    docker = Docker(socket_path, timeout=5.0)
    docker.get("/info")
    drivers = {driver} | managed_names(docker, driver)
    names = []
    running = filters(status=["running", "paused", "restarting"])
    for container in docker.get(f"/containers/json?all=1&filters={running}"):
        details = docker.get(f"/containers/{container['Id']}/json")
        for mount in details.get("Mounts") or []:
            source = mount.get("Source") or ""
            if mount.get("Driver") in drivers or source.startswith(mount_root.rstrip("/") + "/"):
                names.append(mount.get("Name"))
    return names


def managed_names(docker, driver):
    """The names Docker gives this plugin when it runs as a managed plugin
    (``vsphere:latest``, or the reference it was installed from): those of
    the managed plugins that serve ``<driver>.sock``. Container mounts name
    their driver so, with no ``Source``."""
    return {plugin["Name"] for plugin in docker.get("/plugins") or []
            if ((plugin.get("Config") or {}).get("Interface") or {}).get("Socket") == f"{driver}.sock"}
