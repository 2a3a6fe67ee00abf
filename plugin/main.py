"""The plugin processes: ``vsphere-storage-for-docker`` and ``vfile``. Both
read their settings, log to a rotating file, bind their socket before
anything slow, serve Docker until SIGTERM or SIGINT and remove the socket."""

import logging
import logging.handlers
import os
import signal
import sys
import threading

from . import config as configuration


def setup_logging(config):
    level = {"warn": "WARNING", "panic": "CRITICAL", "fatal": "CRITICAL"}.get(
        config.LogLevel.lower(), config.LogLevel.upper())
    os.makedirs(os.path.dirname(config.LogPath) or ".", exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        config.LogPath, maxBytes=config.MaxLogSizeMb << 20, backupCount=config.MaxLogFiles)
    handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


def run(kind, make_driver, started, argv=None):
    """Serve the driver ``make_driver(config)`` of a ``kind`` of plugin;
    ``started(driver)`` runs in the background once the socket is bound
    (recovery, and for vfile the connection to etcd)."""
    from .server import serve

    args = configuration.parser(kind).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = configuration.load(args.config, flags=args, kind=kind)
    except configuration.ConfigError as exc:
        print(f"{kind.PROGRAM}: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "check", False):
        return check(kind, config, args)
    setup_logging(config)
    log = logging.getLogger("vmdkops.plugin")
    for warning in config.warnings:
        log.warning(warning)
        if warning.startswith("Unknown key"):
            print(f"{kind.PROGRAM}: warning: {warning}", file=sys.stderr)
    log.info("Starting plugin driver=%s log_level=%s config=%s group=%s", config.Driver,
             config.LogLevel, args.config, config.GroupID)
    driver = make_driver(config)
    try:
        server = serve(driver, config.socket_path, config.GroupID)
    except (OSError, ValueError) as exc:
        log.error("cannot listen on %s: %s", config.socket_path, exc)
        print(f"{kind.PROGRAM}: cannot listen on {config.socket_path}: {exc}", file=sys.stderr)
        return 1

    def stop(signum, _frame):
        log.info("Received signal signal=%s", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=started, args=(driver,), name="start-up", daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if os.path.lexists(config.socket_path):
            os.unlink(config.socket_path)
        stopping = getattr(driver, "stop", None)
        if stopping is not None:
            stopping()
        log.info("Plugin stopped")
    return 0


def check(kind, config, args):
    """``vfile --check [--repair]``: asks etcd and Docker, serves nothing."""
    from .vfile import check as checking
    from .vfile.driver import VfileDriver

    logging.basicConfig(level=logging.WARNING, format=f"{kind.PROGRAM}: %(message)s")
    return checking.run(VfileDriver(config), args.repair)


def main(argv=None):
    """``vsphere-storage-for-docker``."""
    from .client import Client
    from .devices import EsxDevices, LocalDevices
    from .driver import Driver

    def make(config):
        return Driver(config, Client(config), EsxDevices() if config.Devices == "esx" else LocalDevices())

    def started(driver):
        logging.getLogger("vmdkops.plugin").info(
            "Docker VMDK plugin started socket=%s mount_root=%s", driver.config.socket_path,
            driver.config.MountRoot)
        driver.start_reporting()
        driver.recover()

    return run(configuration.Config, make, started, argv)


def vfile_main(argv=None):
    """``vfile``."""
    from .vfile.driver import VfileDriver

    def started(driver):
        logging.getLogger("vmdkops.plugin").info(
            "VSSD plugin started version=vSphere Shared Storage for Docker Driver socket=%s",
            driver.config.socket_path)
        driver.start()

    return run(configuration.VfileConfig, VfileDriver, started, argv)


if __name__ == "__main__":
    sys.exit(main())
