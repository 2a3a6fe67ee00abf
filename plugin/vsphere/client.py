"""The plugin's side of the executor: one request per connection, this VM's
credential with each, a timeout on every call, and transport failures
retried as the original did (1 s apart, 5 retries). Executor errors come
back as ``ExecutorError`` with the executor's text, for Docker verbatim."""

import errno
import logging
import os
import socket
import ssl
import time

from . import protocol

log = logging.getLogger("vmdkops.plugin")
RETRIES = 5
FAQ = (" Cannot communicate with the executor (vmdk-opsd); check that it runs and that this "
       "plugin's ExecutorSocket/ExecutorTcp setting points at it")


class ExecutorError(Exception):
    """An error the executor answered (its text is for the user)."""


class Client:
    def __init__(self, config, sleep=time.sleep):
        self.config = config
        self.sleep = sleep
        if config.ExecutorTcp:
            host, _, port = config.ExecutorTcp.rpartition(":")
            context = ssl.create_default_context(cafile=config.ExecutorCaFile or None)
            self.connect = protocol.tcp_connector(host, int(port), context)
        elif config.ExecutorVsockPort:
            port = config.ExecutorVsockPort

            def connect():
                sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
                sock.settimeout(10)
                sock.connect((socket.VMADDR_CID_HOST, port))
                return sock
            self.connect = connect
        else:
            self.connect = protocol.unix_connector(config.ExecutorSocket)

    def credential(self):
        try:
            with open(self.config.CredentialFile) as f:
                return f.read().strip()
        except OSError as exc:
            raise ExecutorError(f"No VM credential: cannot read {self.config.CredentialFile}: "
                                f"{exc.strerror}") from None

    def run(self, cmd, name="", opts=None, timeout=120.0, retries=RETRIES):
        """The executor's reply to a command (None for ``null``)."""
        message = protocol.request(cmd, name, opts or None, self.credential(),
                                   os.environ.get("VDVS_TEST_PROTOCOL_VERSION") or protocol.VERSION)
        for attempt in range(retries + 1):
            try:
                reply = protocol.call(self.connect, message, timeout)
                break
            except (OSError, protocol.ProtocolError, ValueError) as exc:
                code = getattr(exc, "errno", None) or errno.EIO
                text = f"Run '{cmd}' failed: {os.strerror(code)} (errno={code}) - {exc}"
                if attempt == retries:
                    raise ExecutorError(text + FAQ) from None
                log.warning("%s Retrying...", text)
                self.sleep(1)
        if isinstance(reply, dict) and isinstance(reply.get("Error"), str) and reply["Error"]:
            raise ExecutorError(reply["Error"])
        return reply
