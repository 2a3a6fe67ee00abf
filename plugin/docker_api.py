"""Just enough of Docker's API (over its unix socket) for recovery: which
running, paused or restarting containers use which volumes of this driver."""

import http.client
import json
import socket
import urllib.parse


class DockerUnavailable(Exception):
    pass


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


def _get(socket_path, url, timeout=5.0):
    connection = _UnixConnection(socket_path, timeout)
    try:
        connection.request("GET", url, headers={"Host": "localhost"})
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        raise DockerUnavailable(f"Can't connect to {socket_path} due to ({exc})") from None
    finally:
        connection.close()
    if response.status != 200:
        raise DockerUnavailable(f"Docker answered {response.status} to {url}")
    return json.loads(body)


def volume_mounts(socket_path, driver, mount_root):
    """Volume names (as containers named them) of this driver that live
    containers use, one entry per container mount. No Docker socket at all
    means no Docker running, so no container uses anything."""
    import os

    if not os.path.exists(socket_path):
        return []
    _get(socket_path, "/v1.24/info")
    filters = urllib.parse.quote(json.dumps({"status": ["running", "paused", "restarting"]}))
    names = []
    for container in _get(socket_path, f"/v1.24/containers/json?all=1&filters={filters}"):
        details = _get(socket_path, f"/v1.24/containers/{container['Id']}/json")
        for mount in details.get("Mounts") or []:
            source = mount.get("Source") or ""
            if mount.get("Driver") == driver or source.startswith(mount_root.rstrip("/") + "/"):
                names.append(mount.get("Name"))
    return names
