"""The vSphere session of the backend: login, a new login when the session
is gone, SOAP round trips counted, PropertyCollector queries, tasks waited
for by reading only ``info.state``, ``info.error`` and ``info.result`` (what
works on ESX and on the simulator), and the datastore file interface
(``/folder``) for side-cars.

Settings (``$VMDKOPS_HOME/vsphere.json``): host, port, user, password_file
(or the environment variable VMDKOPS_VSPHERE_PASSWORD), ca_file, insecure.
The password never appears on a command line or in a log."""

import functools
import http.client
import json
import logging
import os
import ssl
import threading
import time
import urllib.parse

from ...errors import VmdkopsError

log = logging.getLogger("vmdkops.vsphere")

PASSWORD_ENV = "VMDKOPS_VSPHERE_PASSWORD"
TASK_TIMEOUT = 600
SESSION_CHECK = 30  # seconds between checks that the session is still alive


class VsphereError(VmdkopsError):
    pass


def load_settings(path):
    try:
        with open(path) as f:
            settings = json.load(f)
    except (OSError, ValueError) as exc:
        raise VsphereError(f"Cannot read the vSphere settings {path}: {exc}") from None
    password = os.environ.get(PASSWORD_ENV)
    if password is None and settings.get("password_file"):
        try:
            with open(settings["password_file"]) as f:
                password = f.read().strip()
        except OSError as exc:
            raise VsphereError(f"Cannot read the password file: {exc.strerror}") from None
    settings["password"] = password or ""
    return settings


def split_path(datastore_path):
    """``[ds] folder/file`` -> (ds, folder/file)."""
    if not datastore_path.startswith("[") or "] " not in datastore_path:
        raise VsphereError(f"Not a datastore path: {datastore_path}")
    name, _, rest = datastore_path[1:].partition("] ")
    return name, rest


def retried(method):
    """Run a backend method again, once, on a new session when vSphere says the
    session is gone (it expired, or an administrator ended it): a request that
    was not authenticated did nothing."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        from pyVmomi import vim, vmodl

        try:
            return method(self, *args, **kwargs)
        except (vim.fault.NotAuthenticated, vmodl.fault.ManagedObjectNotFound) as exc:
            # A view of the session is gone with it (the simulator says so first).
            if isinstance(exc, vmodl.fault.ManagedObjectNotFound) and \
                    exc.obj not in list(self._views.values()):
                raise
            log.info("vSphere session lost; logging in again")
            self._expire()
            return method(self, *args, **kwargs)
    return run


class TaskFailed(VsphereError):
    def __init__(self, fault):
        self.fault = fault
        message = getattr(fault, "msg", None) or getattr(fault, "faultMessage", None) or type(fault).__name__
        super().__init__(str(message))

    def is_a(self, name):
        return type(self.fault).__name__.endswith(name)


class Session:
    """The connection every part of the backend speaks through."""

    def __init__(self, settings):
        self.settings = settings
        self._si = None
        self._checked = 0.0
        self._lock = threading.Lock()
        self._views = {}
        self._datacenter_ref = None
        self._stores = {}  # name -> (datastore browser, capacity bytes, free bytes)
        # vSphere API round trips (SOAP calls and datastore file requests) of this backend.
        self.round_trips = 0

    def ssl_context(self):
        if self.settings.get("insecure"):
            return ssl._create_unverified_context()  # explicitly asked for
        return ssl.create_default_context(cafile=self.settings.get("ca_file") or None)

    @property
    def si(self):
        """The service instance; the session is checked at most every
        SESSION_CHECK seconds and made again when it has expired."""
        from pyVmomi import vim

        with self._lock:
            if self._si is not None:
                if time.monotonic() - self._checked < SESSION_CHECK:
                    return self._si
                try:
                    if self._content.sessionManager.currentSession is not None:
                        self._checked = time.monotonic()
                        return self._si
                except (vim.fault.NotAuthenticated, OSError):
                    pass
            self._si = self._connect()
            self._content = self._si.RetrieveContent()
            self._checked = time.monotonic()
            # Objects of the old session would still speak through its stub.
            self._views, self._datacenter_ref, self._stores = {}, None, {}
            return self._si

    def close(self):
        """Log out: vCenter keeps a session until it times out, and limits them."""
        with self._lock:
            si, self._si = self._si, None
            self._views, self._datacenter_ref, self._stores = {}, None, {}
        if si is not None:
            try:
                self._content.sessionManager.Logout()
            except Exception as exc:  # noqa: BLE001 - the session is given up either way
                log.debug("logout from %s failed: %s", self.server(), exc)

    def _expire(self):
        with self._lock:
            self._si = None

    def _connect(self):
        from pyVim.connect import SmartConnect
        from pyVmomi import vim

        try:
            si = SmartConnect(
                host=self.settings["host"], port=int(self.settings.get("port", 443)),
                user=self.settings.get("user", ""), pwd=self.settings.get("password", ""),
                sslContext=self.ssl_context())
        except vim.fault.InvalidLogin:
            raise VsphereError(f"vSphere refused the login of {self.settings.get('user')} "
                               f"at {self.settings['host']}") from None
        except OSError as exc:
            raise VsphereError(f"Cannot reach vSphere at {self.settings['host']}: {exc}") from None
        self.count_round_trips(si._stub)
        return si

    def count_round_trips(self, stub):
        """Count the round trips of a SOAP stub in ``round_trips``."""
        invoke = stub.InvokeMethod

        def counted(*args, **kwargs):
            self.round_trips += 1
            return invoke(*args, **kwargs)
        stub.InvokeMethod = counted

    def server(self):
        return f"{self.settings['host']}:{self.settings.get('port', 443)}"

    @retried
    def session_info(self):
        """What ``vmdkops_admin status`` shows of the vSphere session."""
        content = self.content
        session = content.sessionManager.currentSession
        about = content.about
        return {"server": self.server(), "product": f"{about.fullName} ({about.apiType})",
                "user": session.userName, "since": session.loginTime.isoformat(timespec="seconds"),
                "tls": "not verified (insecure)" if self.settings.get("insecure") else "verified"}

    @property
    def content(self):
        self.si  # noqa: B018 - connected, and the session checked
        return self._content

    @property
    def is_vcenter(self):
        return self.content.about.apiType == "VirtualCenter"

    def _datacenter(self):
        from pyVmomi import vim

        content = self.content
        if self._datacenter_ref is None:
            self._datacenter_ref = next(e for e in content.rootFolder.childEntity
                                        if isinstance(e, vim.Datacenter))
            self._datacenter_name = self._datacenter_ref.name
        return self._datacenter_ref

    def _retrieve(self, kind, paths):
        """(object, {path: value}) of every managed object of ``kind``, in one
        query through a container view kept for the session."""
        from pyVmomi import vmodl

        content = self.content
        view = self._views.get(kind)
        if view is None:
            view = self._views[kind] = content.viewManager.CreateContainerView(
                content.rootFolder, [kind], True)
        collector = vmodl.query.PropertyCollector
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=view, skip=True, selectSet=[collector.TraversalSpec(
                name="view", path="view", skip=False, type=type(view))])],
            propSet=[collector.PropertySpec(type=kind, pathSet=list(paths))])
        return [(o.obj, {p.name: p.val for p in o.propSet})
                for o in content.propertyCollector.RetrieveContents([spec])]

    def wait(self, task):
        """The result of a task; a VsphereError with its fault message if it failed."""
        from pyVmomi import vim, vmodl

        collector = vmodl.query.PropertyCollector
        spec = collector.FilterSpec(
            objectSet=[collector.ObjectSpec(obj=task)],
            propSet=[collector.PropertySpec(type=vim.Task, pathSet=["info.state", "info.error",
                                                                    "info.result"])])
        deadline = time.monotonic() + TASK_TIMEOUT
        delay = 0.005
        while True:
            [found] = self.content.propertyCollector.RetrieveContents([spec])
            info = {p.name: p.val for p in found.propSet}
            if info["info.state"] == "success":
                return info.get("info.result")
            if info["info.state"] == "error":
                raise TaskFailed(info.get("info.error"))
            if time.monotonic() > deadline:
                raise VsphereError("A vSphere task did not finish in time")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _file_request(self, method, datastore_path, body=None, retry=False):
        datastore_name, path = split_path(datastore_path)
        self._datacenter()
        query = urllib.parse.urlencode({"dcPath": self._datacenter_name, "dsName": datastore_name})
        connection = http.client.HTTPSConnection(self.settings["host"], int(self.settings.get("port", 443)),
                                                 context=self.ssl_context(), timeout=60)
        try:
            connection.request(method, f"/folder/{urllib.parse.quote(path)}?{query}", body=body,
                               headers={"Cookie": self.si._stub.cookie,
                                        "Content-Type": "application/octet-stream"})
            self.round_trips += 1
            response = connection.getresponse()
            status, answer = response.status, response.read()
        finally:
            connection.close()
        if status in (401, 403) and not retry:
            self._expire()  # the session is gone: log in again, once
            return self._file_request(method, datastore_path, body, retry=True)
        return status, answer

    def _put_file(self, datastore_path, body, what=None):
        status, _ = self._file_request("PUT", datastore_path, body)
        if status not in (200, 201, 204):
            raise VsphereError(f"Failed to write {what or datastore_path}: HTTP {status}")
