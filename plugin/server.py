"""Docker's volume plugin protocol over HTTP on a unix socket (spec plugin §1):
POST requests with JSON bodies, replies with the whole response object,
status 500 when ``Err`` is set, 404 for unknown paths, 400 for bodies that
are not JSON."""

import grp
import http.server
import json
import logging
import os
import socketserver

from .refcount import DriverError

log = logging.getLogger("vmdkops.plugin")
CONTENT_TYPE = "application/vnd.docker.plugins.v1.1+json"


def _empty():
    return {"Mountpoint": "", "Err": "", "Volumes": None, "Volume": None,
            "Capabilities": {"Scope": ""}}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    driver = None  # set by serve()

    def address_string(self):
        return "docker"

    def log_message(self, fmt, *args):
        log.debug("http: " + fmt, *args)

    def _send(self, status, body, content_type=CONTENT_TYPE):
        data = body if isinstance(body, bytes) else (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.path == "/Plugin.Activate":
            return self._send(200, {"Implements": ["VolumeDriver"]})
        handler = ROUTES.get(self.path)
        if handler is None:
            return self._send(404, b"404 page not found\n", "text/plain; charset=utf-8")
        try:
            request = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, ValueError) as exc:
            return self._send(400, f"{exc}\n".encode(), "text/plain; charset=utf-8")
        if not isinstance(request, dict):
            return self._send(400, b"request body must be a JSON object\n", "text/plain; charset=utf-8")
        response = _empty()
        try:
            handler(self.driver, request, response)
        except self.driver.ERRORS as exc:
            response["Err"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - Docker gets an error, the plugin goes on
            log.exception("internal error on %s", self.path)
            response["Err"] = f"Internal Error({type(exc).__name__}); see the plugin log"
        if response["Err"]:
            log.info("%s %s: %s", self.path, request.get("Name", ""), response["Err"])
        try:
            self._send(500 if response["Err"] else 200, response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            if self.path == "/VolumeDriver.Mount" and not response["Err"]:
                self._undo_mount(request)

    def _undo_mount(self, request):
        """Docker gave up on a Mount (its plugin timeout) that was done: nobody
        would ever unmount it."""
        name = request.get("Name")
        try:
            self.driver.unmount(_name(request), str(request.get("ID", "")))
        except Exception as exc:  # noqa: BLE001 - logged; the connection is gone
            log.error("Docker was gone when the Mount of %s was done, and undoing it failed: %s", name, exc)
        else:
            log.warning("Docker was gone when the Mount of %s was done: it is undone", name)

    do_GET = do_PUT = do_POST


def _name(request):
    name = request.get("Name")
    if not isinstance(name, str):
        raise DriverError("Name must be a string")
    return name


def _create(driver, request, response):
    opts = request.get("Opts") or {}
    if not isinstance(opts, dict):
        raise DriverError("Opts must be an object")
    driver.create(_name(request), {str(k): str(v) for k, v in opts.items()})


def _mount(driver, request, response):
    response["Mountpoint"] = driver.mount(_name(request), str(request.get("ID", "")))


def _get(driver, request, response):
    response["Volume"] = driver.get(_name(request))


def _list(driver, request, response):
    response["Volumes"] = driver.list()


ROUTES = {
    "/VolumeDriver.Create": _create,
    "/VolumeDriver.Remove": lambda d, r, resp: d.remove(_name(r)),
    "/VolumeDriver.Mount": _mount,
    "/VolumeDriver.Unmount": lambda d, r, resp: d.unmount(_name(r), str(r.get("ID", ""))),
    "/VolumeDriver.Path": lambda d, r, resp: resp.__setitem__("Mountpoint", d.path(_name(r))),
    "/VolumeDriver.Get": _get,
    "/VolumeDriver.List": _list,
    "/VolumeDriver.Capabilities": lambda d, r, resp: resp.__setitem__("Capabilities", {"Scope": "global"}),
}


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def group_id(group):
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise ValueError(f"Group {group} not found") from None


def serve(driver, socket_path, group="root"):
    """A server listening on ``socket_path`` (mode 0660, owned by ``group``)."""
    os.makedirs(os.path.dirname(socket_path), mode=0o755, exist_ok=True)
    if os.path.lexists(socket_path):
        os.unlink(socket_path)
    handler = type("BoundHandler", (Handler,), {"driver": driver})
    old_umask = os.umask(0o777)
    try:
        server = Server(socket_path, handler)
    finally:
        os.umask(old_umask)
    os.chown(socket_path, 0, group_id(group))
    os.chmod(socket_path, 0o660)
    return server
