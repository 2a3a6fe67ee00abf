"""The executor's listeners and workers. One request per connection. The
accept loop never blocks: it reads every connection's request itself, as
bytes arrive (TLS handshakes included), and hands a request to the bounded
pool of workers only once it is whole; a request that is not whole within
``REQUEST_DEADLINE`` of its connection is dropped. So a client that sends
slowly, or not at all, costs a buffer and never a worker: it cannot delay
anyone else's request. Past ``max_connections`` open connections a new one
is told that the service is busy as soon as its request is in (past twice
as many it is closed unanswered). On SIGTERM, requests in
flight finish, new ones are declined, and the process exits when the last
one is done (or after a grace period)."""

import json
import logging
import os
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from plugin.vsphere import protocol

from ..errors import VM_NOT_FOUND
from . import credentials

log = logging.getLogger("vmdkops.executor")

STOPPING = "Service is being stopped: operation declined!"
BUSY = "Service is busy: too many connections; try again"
BAD_CREDENTIAL = ("Unknown or missing VM credential: this VM must present the credential that "
                  "'vmdkops_admin host vm token' issued for it")
SOCKET_TIMEOUT = 10.0
REQUEST_DEADLINE = 10.0   # from accept to a whole request
# A connection past the limit is read this long, so that its client has sent
# its request (a socket closed under a client that still writes gives it a
# broken pipe, not the answer) and is answered BUSY.
BUSY_LINGER = 1.0
STOP_GRACE = 20.0
MAX_CONNECTIONS = 256


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


class _Incoming:
    """A connection whose request is still arriving; ``busy`` when it came past
    the limit (its request is read, for a moment only, to be told so)."""

    def __init__(self, sock, listener, busy=False):
        self.listener = listener
        self.busy = busy
        self.deadline = time.monotonic() + (BUSY_LINGER if busy else REQUEST_DEADLINE)
        self.buffer = bytearray()
        self.length = None  # of the payload, once the header is in
        if listener.ssl_context is not None:
            sock = listener.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self.sock = sock
        self.handshaken = listener.ssl_context is None

    def read(self):
        """Take what has arrived: the request when it is whole, else None.
        ``ProtocolError`` or ``OSError`` for a client that broke the protocol
        or went away."""
        if not self.handshaken:
            try:
                self.sock.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None
            self.handshaken = True
        while True:
            want = (protocol.HEADER.size if self.length is None else protocol.HEADER.size + self.length)
            try:
                chunk = self.sock.recv(want - len(self.buffer))
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return None
            if not chunk:
                raise protocol.ProtocolError("connection closed in the middle of a message")
            self.buffer += chunk
            if self.length is None and len(self.buffer) == protocol.HEADER.size:
                self.length = protocol.payload_length(bytes(self.buffer))
            elif self.length is not None and len(self.buffer) == protocol.HEADER.size + self.length:
                return protocol.message_of(self.buffer[protocol.HEADER.size:])


class Server:
    def __init__(self, dispatcher, listeners, workers=16, max_connections=MAX_CONNECTIONS):
        self.dispatcher = dispatcher
        self.listeners = listeners
        self.max_connections = max_connections
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="request")
        self.stopping = threading.Event()
        self.incoming = {}  # socket -> _Incoming
        self.in_flight = 0  # requests handed to the workers, not yet answered
        self._count = threading.Lock()
        self._selector = None

    def stop(self):
        self.stopping.set()

    def serve(self):
        self._selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self._selector.register(listener.sock, selectors.EVENT_READ, listener)
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
                for key, _ in self._selector.select(timeout=0.2):
                    if isinstance(key.data, Listener):
                        self._accept(key.data)
                    else:
                        self._receive(key.data)
                self._expire()
        finally:
            for incoming in list(self.incoming.values()):
                self._drop(incoming)
            self._selector.close()
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
        conn.setblocking(False)
        with self._count:
            open_now = len(self.incoming) + self.in_flight
        if open_now >= 2 * self.max_connections:  # a flood: not even told
            conn.close()
            return
        busy = open_now >= self.max_connections
        if busy:
            log.warning("busy: %d connections open; one more on %s refused", open_now, listener.description)
        try:
            incoming = _Incoming(conn, listener, busy)
        except (OSError, ValueError) as exc:
            log.info("dropped a connection on %s: %s", listener.description, exc)
            conn.close()
            return
        self.incoming[incoming.sock] = incoming
        self._selector.register(incoming.sock, selectors.EVENT_READ, incoming)
        self._receive(incoming)  # what came with the connection

    def _receive(self, incoming):
        try:
            raw = incoming.read()
        except (OSError, protocol.ProtocolError, ValueError) as exc:
            log.info("dropped a connection on %s: %s", incoming.listener.description, exc)
            self._drop(incoming)
            return
        if raw is None:
            return
        if incoming.busy or self.stopping.is_set():
            _send_now(incoming.sock, {"Error": BUSY if incoming.busy else STOPPING})
            self._drop(incoming)
            return
        self._selector.unregister(incoming.sock)
        del self.incoming[incoming.sock]
        incoming.sock.setblocking(True)
        incoming.sock.settimeout(SOCKET_TIMEOUT)
        with self._count:
            self.in_flight += 1
        self.pool.submit(self._serve_one, incoming.sock, incoming.listener, raw)

    def _expire(self):
        now = time.monotonic()
        for incoming in [i for i in self.incoming.values() if i.deadline < now]:
            if incoming.busy:
                _send_now(incoming.sock, {"Error": BUSY})
            else:
                log.info("dropped a connection on %s: no whole request within %.0f s",
                         incoming.listener.description, REQUEST_DEADLINE)
            self._drop(incoming)

    def _drop(self, incoming):
        self._selector.unregister(incoming.sock)
        del self.incoming[incoming.sock]
        incoming.sock.close()

    def _serve_one(self, conn, listener, raw):
        try:
            protocol.write_frame(conn, protocol.encode(self._reply(raw)))
        except (OSError, protocol.ProtocolError, ValueError) as exc:
            log.info("dropped a connection on %s: %s", listener.description, exc)
        finally:
            conn.close()
            with self._count:
                self.in_flight -= 1

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


def _send_now(conn, reply):
    """Send a short reply without waiting (it fits in the socket's buffer)."""
    payload = protocol.encode(reply) + b"\0"
    try:
        conn.send(protocol.HEADER.pack(protocol.MAGIC, len(payload)) + payload)
    except OSError:
        pass
