"""What the admin side knows about the ``vmdk-opsd`` service: whether it runs
(its pid file and a live process), its listeners (the state file it writes at
start) and its logging settings."""

import json
import os

from . import __version__
from .paths import layout


def running_pid():
    """The service's pid when its pid file names a live process, else None."""
    try:
        with open(layout().service_pid) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def listeners():
    try:
        with open(layout().service_state) as f:
            return json.load(f).get("listeners") or []
    except (OSError, ValueError):
        return []


def log_level():
    try:
        with open(layout().log_config) as f:
            return json.load(f)["root"]["level"]
    except (OSError, ValueError, KeyError, TypeError):
        return "INFO"


def status_lines(fast=False):
    paths = layout()
    pid = running_pid()
    lines = ["=== Service: ", f"Version: {'?' if fast else __version__}",
             f"Status: {'Running' if pid else 'Stopped'}"]
    if pid:
        lines.append(f"Pid: {pid}")
        lines.append(f"Port: {'?' if fast else (', '.join(listeners()) or 'N/A')}")
    lines += [f"LogConfigFile: {paths.log_config}", f"LogFile: {paths.log_file}",
              f"LogLevel: {log_level()}"]
    return lines + backend_lines(fast) + ["=== Authorization Config DB: "]


def backend_lines(fast=False):
    """The backend, and for vSphere its session (made by this command, as the
    service's own would be: the same settings and credentials)."""
    from .backends import get_backend
    from .errors import VmdkopsError

    try:
        backend = get_backend()
    except VmdkopsError as exc:
        return ["=== Backend: ", f"Backend: ? ({exc})"]
    lines = ["=== Backend: ", f"Backend: {backend.name}"]
    if backend.server() is None:
        return lines
    lines.append(f"Server: {backend.server()}")
    if fast:
        return lines + ["Session: ?"]
    try:
        info = backend.session_info()
    except VmdkopsError as exc:
        return lines + [f"Session: not connected ({exc})"]
    finally:
        backend.close()
    return lines + [f"Product: {info['product']}",
                    f"Session: {info['user']} since {info['since']}", f"TLS: {info['tls']}"]
