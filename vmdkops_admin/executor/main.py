"""``vmdk-opsd``: runs the executor in the foreground (for systemd), with a
pid file, a state file naming its listeners (read by ``vmdkops_admin
status``) and the original's rotating log configured from a JSON file."""

import argparse
import json
import logging
import logging.config
import os
import signal
import socket
import sys
import threading

from .. import __version__
from ..paths import layout
from .server import MAX_CONNECTIONS

DEFAULT_LOG_CONFIG = {
    "info": ["Logging configuration of vmdk-opsd (Python logging dictConfig).",
             "The handler named rotate_file is the service's log file."],
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"standard": {
        "format": "%(asctime)-12s %(process)d [%(threadName)s] [%(levelname)-7s] %(message)s",
        "datefmt": "%x %X"}},
    "handlers": {"rotate_file": {
        "class": "logging.handlers.RotatingFileHandler", "formatter": "standard",
        "filename": "", "maxBytes": 1048576, "backupCount": 1, "encoding": "utf8"}},
    "root": {"handlers": ["rotate_file"], "level": "INFO"},
}


def configure_logging(paths):
    """Load the log configuration, writing the default one first if there is none."""
    if not os.path.exists(paths.log_config):
        config = json.loads(json.dumps(DEFAULT_LOG_CONFIG))
        config["handlers"]["rotate_file"]["filename"] = paths.log_file
        with open(paths.log_config, "w") as f:
            json.dump(config, f, indent=2)
    with open(paths.log_config) as f:
        config = json.load(f)
    config.pop("info", None)
    log_file = config.get("handlers", {}).get("rotate_file", {}).get("filename")
    if log_file:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
    logging.config.dictConfig(config)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="vmdk-opsd", description="The vmdkops executor: serves volume requests of Docker "
        "hosts (VMs) under the control of the auth DB.")
    parser.add_argument("--unix-socket", metavar="PATH",
                        help="listen on this unix socket (default: $VMDKOPS_HOME/run/vmdk-opsd.sock)")
    parser.add_argument("--no-unix-socket", action="store_true", help="do not listen on a unix socket")
    parser.add_argument("--tcp", metavar="HOST:PORT", help="also listen on TCP with TLS")
    parser.add_argument("--tls-cert", metavar="FILE", help="certificate (PEM) for --tcp")
    parser.add_argument("--tls-key", metavar="FILE", help="private key (PEM) for --tcp")
    parser.add_argument("--vsock-port", type=int, metavar="PORT",
                        help="also listen on AF_VSOCK where the platform has it")
    parser.add_argument("--workers", type=int, default=16, help="requests served at once (16)")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS, metavar="N",
                        help=f"connections open at once; past them a new one is told the service "
                             f"is busy ({MAX_CONNECTIONS})")
    parser.add_argument("--backend", choices=("local", "vsphere"),
                        help="local (default), or vsphere with the settings of $VMDKOPS_HOME/vsphere.json "
                             "(the default when that file exists)")
    parser.add_argument("--version", action="version", version=f"vmdk-opsd {__version__}")
    return parser


def parse_args(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.tcp and not (args.tls_cert and args.tls_key):
        parser.error("--tcp needs --tls-cert and --tls-key")
    return args


def ensure_local_credential(backend, paths):
    """On the embedded default, the first start gives this machine's VM a
    credential in a root-only file that the local plugin reads."""
    from ..backends.local import this_machine_uuid
    from . import credentials

    target = os.path.join(paths.root, "local-vm.credential")
    if os.path.exists(target):
        return
    local = backend.find_vm(this_machine_uuid())
    if local is None:
        return
    token = credentials.issue(local.uuid, rotate=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def reconcile_at_start(backend, log):
    """Finish or undo what a crash interrupted before serving anyone."""
    from ..admin.reconcile import reconcile
    from ..db.modes import run_in_transaction
    from ..errors import VmdkopsError

    try:
        findings = run_in_transaction(reconcile, backend, optional=True)
    except VmdkopsError as exc:
        log.warning("reconcile at start skipped: %s", exc)
        return
    for finding in findings:
        log.warning("reconcile: %s: %s: %s", finding.volume, finding.problem, finding.action)


def listeners_of(args):
    """The listeners the arguments ask for (OSError, ValueError when one cannot listen)."""
    from .server import tcp_listener, unix_listener, vsock_listener

    listeners = []
    try:
        if not args.no_unix_socket:
            listeners.append(unix_listener(args.unix_socket or os.path.join(layout().run, "vmdk-opsd.sock")))
        if args.tcp:
            host, _, port = args.tcp.rpartition(":")
            listeners.append(tcp_listener(host or "127.0.0.1", int(port), args.tls_cert, args.tls_key))
        if args.vsock_port is not None:
            if not hasattr(socket, "AF_VSOCK"):
                raise OSError("AF_VSOCK is not available on this platform")
            listeners.append(vsock_listener(args.vsock_port))
    except BaseException:
        remove_sockets(listeners)
        raise
    return listeners


def remove_sockets(listeners):
    for listener in listeners:
        if listener.description.startswith("unix:"):
            socket_path = listener.description[len("unix:"):]
            if os.path.exists(socket_path):
                os.unlink(socket_path)


def start_power_watch(backend, dispatcher):
    """A thread that detaches the volumes of VMs that power off, where the
    backend tells; a function that stops it."""
    if not backend.can(backend.POWER_WATCH):
        return lambda: None
    stop = threading.Event()
    watch = threading.Thread(target=backend.watch_power_off, args=(dispatcher.vms_powered_off, stop),
                             name="power-state watch", daemon=True)
    watch.start()

    def stop_watch():
        stop.set()
        backend.stop_watch()
        watch.join(timeout=10)
    return stop_watch


def write_state(paths, listeners):
    with open(paths.service_state, "w") as f:
        json.dump({"pid": os.getpid(), "version": __version__,
                   "listeners": [listener.description for listener in listeners]}, f)
    with open(paths.service_pid, "w") as f:
        f.write(f"{os.getpid()}\n")


def remove_state(paths):
    for path in (paths.service_pid, paths.service_state):
        if os.path.exists(path):
            os.unlink(path)


def main(argv=None):
    from ..backends import get_backend
    from ..errors import VmdkopsError
    from .dispatch import Dispatcher
    from .server import Server

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.backend:
        os.environ["VMDKOPS_BACKEND"] = args.backend
    paths = layout()
    os.makedirs(paths.run, exist_ok=True)
    configure_logging(paths)
    log = logging.getLogger("vmdkops.executor")
    log.info("==== Starting vmdkops service ====")
    log.info("Version: %s , Pid: %d", __version__, os.getpid())

    try:
        backend = get_backend()
    except VmdkopsError as exc:
        log.error("no backend: %s", exc)
        print(f"vmdk-opsd: {exc}", file=sys.stderr)
        return 1
    ensure_local_credential(backend, paths)
    try:
        listeners = listeners_of(args)
    except (OSError, ValueError) as exc:
        log.error("cannot listen: %s", exc)
        print(f"vmdk-opsd: cannot listen: {exc}", file=sys.stderr)
        return 1
    if not listeners:
        print("vmdk-opsd: no listener configured", file=sys.stderr)
        return 2

    reconcile_at_start(backend, log)
    dispatcher = Dispatcher(backend)
    stop_watch = start_power_watch(backend, dispatcher)
    server = Server(dispatcher, listeners, workers=args.workers, max_connections=args.max_connections)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    signal.signal(signal.SIGINT, lambda *_: server.stop())
    write_state(paths, listeners)
    log.info("listening on %s", ", ".join(listener.description for listener in listeners))
    try:
        server.serve()
    finally:
        stop_watch()
        dispatcher.close()
        backend.close()
        remove_state(paths)
        remove_sockets(listeners)
        log.info("==== Stopped vmdkops service ====")
    return 0


if __name__ == "__main__":
    sys.exit(main())
