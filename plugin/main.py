"""``vsphere-storage-for-docker``: the Docker volume plugin process."""

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


def main(argv=None):
    from .client import Client
    from .devices import EsxDevices, LocalDevices
    from .driver import Driver
    from .server import serve

    args = configuration.parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = configuration.load(args.config, flags=args)
    except configuration.ConfigError as exc:
        print(f"vsphere-storage-for-docker: {exc}", file=sys.stderr)
        return 1
    setup_logging(config)
    log = logging.getLogger("vmdkops.plugin")
    for warning in config.warnings:
        log.warning(warning)
        if warning.startswith("Unknown key"):
            print(f"vsphere-storage-for-docker: warning: {warning}", file=sys.stderr)
    log.info("Starting plugin driver=%s log_level=%s config=%s group=%s", config.Driver,
             config.LogLevel, args.config, config.GroupID)

    driver = Driver(config, Client(config), EsxDevices() if config.Devices == "esx" else LocalDevices())
    try:
        server = serve(driver, config.socket_path, config.GroupID)
    except (OSError, ValueError) as exc:
        log.error("cannot listen on %s: %s", config.socket_path, exc)
        print(f"vsphere-storage-for-docker: cannot listen on {config.socket_path}: {exc}",
              file=sys.stderr)
        return 1

    def stop(signum, _frame):
        log.info("Received signal signal=%s", signal.Signals(signum).name)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=driver.recover, name="recovery", daemon=True).start()
    log.info("Docker VMDK plugin started socket=%s mount_root=%s", config.socket_path, config.MountRoot)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if os.path.lexists(config.socket_path):
            os.unlink(config.socket_path)
        log.info("Plugin stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
