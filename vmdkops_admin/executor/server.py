"""The executor's listeners and workers. One request per connection; a
timeout on every socket; a bounded pool of workers (accepting waits while
all are busy); a client that misbehaves loses its connection and nothing
else. On SIGTERM, requests in flight finish, new ones are declined, and the
process exits when the last one is done (or after a grace period)."""

import json
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from plugin import protocol

from .. import credentials
from ..errors import VM_NOT_FOUND

log = logging.getLogger("vmdkops.executor")

STOPPING = "Service is being stopped: operation declined!"
BAD_CREDENTIAL = ("Unknown or missing VM credential: this VM must present the credential that "
                  "'vmdkops_admin host vm token' issued for it")
SOCKET_TIMEOUT = 10.0
STOP_GRACE = 20.0


class Listener:
    def __init__(self, sock, description, ssl_context=None):
        self.sock = sock
        self.description = description
        self.ssl_context = ssl_context


def unix_listener(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.lexists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(128)
    return Listener(sock, f"unix:{path}")


def tcp_listener(host, port, cert, key):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    sock = socket.create_server((host, port), backlog=128, reuse_port=False)
    return Listener(sock, f"tcp+tls:{host}:{sock.getsockname()[1]}", context)


def vsock_listener(port):
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    sock.bind((socket.VMADDR_CID_ANY, port))
    sock.listen(128)
    return Listener(sock, f"vsock:{port}")


class Server:
    def __init__(self, dispatcher, listeners, workers=16):
        self.dispatcher = dispatcher
        self.listeners = listeners
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="request")
        self.slots = threading.BoundedSemaphore(workers * 2)
        self.stopping = threading.Event()
        self.in_flight = 0
        self._count = threading.Lock()

    def stop(self):
        self.stopping.set()

    def serve(self):
        selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            selector.register(listener.sock, selectors.EVENT_READ, listener)
        stop_deadline = None
        try:
            while True:
                if self.stopping.is_set():
                    stop_deadline = stop_deadline or time.monotonic() + STOP_GRACE
                    with self._count:
                        idle = self.in_flight == 0
                    if idle:
                        break
                    if time.monotonic() > stop_deadline:
                        log.warning("In-flight operations are taking too long to complete - "
                                    "abandoning wait")
                        break
                for key, _ in selector.select(timeout=0.2):
                    self._accept(key.data)
        finally:
            selector.close()
            for listener in self.listeners:
                listener.sock.close()
            self.pool.shutdown(wait=False)

    def _accept(self, listener):
        try:
            conn, _ = listener.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("accept failed on %s: %s", listener.description, exc)
            return
        conn.setblocking(True)
        conn.settimeout(SOCKET_TIMEOUT)
        if self.stopping.is_set():
            threading.Thread(target=self._decline, args=(conn, listener), daemon=True).start()
            return
        self.slots.acquire()
        with self._count:
            self.in_flight += 1
        self.pool.submit(self._serve_one, conn, listener)

    def _decline(self, conn, listener):
        try:
            conn = self._secure(conn, listener)
            protocol.read_frame(conn)
            protocol.write_frame(conn, protocol.encode({"Error": STOPPING}))
        except (OSError, protocol.ProtocolError, ValueError):
            pass
        finally:
            conn.close()

    def _secure(self, conn, listener):
        if listener.ssl_context is None:
            return conn
        return listener.ssl_context.wrap_socket(conn, server_side=True)

    def _serve_one(self, conn, listener):
        try:
            conn = self._secure(conn, listener)
            raw = protocol.read_frame(conn)
            reply = self._reply(raw)
            protocol.write_frame(conn, protocol.encode(reply))
        except (OSError, protocol.ProtocolError, ValueError) as exc:
            log.info("dropped a connection on %s: %s", listener.description, exc)
        finally:
            conn.close()
            with self._count:
                self.in_flight -= 1
            self.slots.release()

    def _reply(self, raw):
        try:
            message = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            shown = raw[:200].decode("utf-8", "replace")
            return {"Error": f"Failed to parse json '{shown}'."}
        credential = message.get("credential") if isinstance(message, dict) else None
        vm_uuid = credentials.vm_for(credential)
        vm = self.dispatcher.backend.find_vm(vm_uuid) if vm_uuid else None
        if vm is None:
            if vm_uuid:
                if isinstance(message, dict) and message.get("cmd") == "list":
                    return []  # list never fails (spec esx-service §16.2): no VM, no volumes
                return {"Error": VM_NOT_FOUND.format(vm_uuid)}
            if isinstance(message, dict) and message.get("cmd") == "version":
                return self.dispatcher.handle(message, None)
            return {"Error": BAD_CREDENTIAL}
        return self.dispatcher.handle(message, vm)
