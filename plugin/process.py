"""What the plugin processes share (``vsphere-storage-for-docker``,
``vfile``): read the settings, log to a rotating file, bind the socket
before anything slow, start the driver in the background, serve Docker
until SIGTERM or SIGINT, then remove the socket and stop the driver."""

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


def run(kind, make_driver, argv=None, checking=None):
    """Serve the driver ``make_driver(config)`` of a ``kind`` of plugin (its
    ``start`` runs once the socket is bound, its ``stop`` at the end);
    ``checking(config, args)``, when given, serves the ``--check`` flag."""
    from .server import serve

    args = configuration.parser(kind).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = configuration.load(args.config, flags=args, kind=kind)
    except configuration.ConfigError as exc:
        print(f"{kind.PROGRAM}: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "check", False):
        return checking(config, args)
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
        threading.Thread(target=server.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=driver.start, name="start-up", daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if os.path.lexists(config.socket_path):
            os.unlink(config.socket_path)
        driver.stop()
        log.info("Plugin stopped")
    return 0
