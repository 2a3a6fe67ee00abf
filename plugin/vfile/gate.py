"""The managers' door to etcd. A swarm certificate stays valid until it
expires (three months by default), also for a node that was removed from
the swarm, and etcd's JSON gateway cannot take a certificate's CN as an etcd
user. So on a manager, etcd's client port is this plugin's: each connection
must present a certificate of this swarm whose node id (its CN) is a node of
the swarm now, and only then are its bytes passed to etcd, which listens on
the loopback alone. A node removed from the swarm is refused from its next
connection, and the connections it has are closed, at the next look at the
swarm's nodes (the helper loop's, or at once when an unknown node knocks)."""

import logging
import select
import socket
import ssl
import threading
import time

log = logging.getLogger("vmdkops.plugin")
HANDSHAKE = 5.0  # seconds a client has to show its certificate
BACKLOG = 1 << 20  # bytes buffered for a side that does not read, before the other is read again
ASK_AGAIN = 2.0  # seconds between two looks at the swarm's nodes for an unknown one
PROTOCOLS = ["h2", "http/1.1"]  # etcd's gRPC (etcdctl's) and its JSON gateway (the plugin's)


class Gate:
    """Listens on ``address``:``port``; passes members' connections to etcd on
    127.0.0.1:``upstream``. ``identity`` is the node's (``pki.NodeIdentity``),
    ``node_id`` its id (the name its own etcd's certificate has, whatever its
    role), ``nodes()`` the ids of the swarm's nodes now."""

    def __init__(self, address, port, upstream, identity, node_id, nodes):
        self.address, self.port, self.upstream = address, port, upstream
        self.identity, self.node_id, self.nodes = identity, node_id, nodes
        self.members, self._asked = set(), 0.0
        self._open = {}  # node id -> set of sockets
        self._guard = threading.Lock()
        self._listener = None
        self.stopping = threading.Event()

    def start(self):
        self._listener = socket.create_server((self.address, self.port), backlog=128, reuse_port=False)
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - a node promoted a moment ago: asked again at the first knock
            log.warning("etcd's gate could not look at the swarm's nodes yet: %s", exc)
        threading.Thread(target=self._accept, name="etcd-gate", daemon=True).start()
        log.info("etcd's gate listens on %s:%d for the swarm's nodes", self.address, self.port)

    def stop(self):
        self.stopping.set()
        if self._listener is not None:
            _shut(self._listener)  # wakes the accept (a close alone leaves the port taken until a knock)
            self._listener.close()
        with self._guard:
            for sockets in self._open.values():
                for sock in sockets:
                    _shut(sock)

    def refresh(self):
        """Look at the swarm's nodes again; close the connections of those gone."""
        members = set(self.nodes())
        with self._guard:
            self.members, self._asked = members, time.monotonic()
            gone = [node for node in self._open if node not in members]
            for node in gone:
                log.warning("Node %s is no longer in the swarm: its etcd connections are closed", node)
                for sock in self._open.pop(node):
                    _shut(sock)

    def _server_context(self):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(self.identity.ca)
        context.load_cert_chain(self.identity.cert, self.identity.key)
        context.set_alpn_protocols(PROTOCOLS)
        return context

    def _accept(self):
        while not self.stopping.is_set():
            try:
                conn, peer = self._listener.accept()
            except OSError:
                if self.stopping.is_set():
                    return
                continue
            threading.Thread(target=self._serve, args=(conn, peer), name="etcd-gate-conn", daemon=True).start()

    def _serve(self, conn, peer):
        client = upstream = None
        try:
            conn.settimeout(HANDSHAKE)
            client = self._server_context().wrap_socket(conn, server_side=True)
            node = _common_name(client.getpeercert())
            if not self._admitted(node):
                log.warning("etcd's gate refused %s: node %s is not in the swarm", peer[0], node)
                return
            upstream = self.identity.context(client.selected_alpn_protocol()).wrap_socket(
                socket.create_connection(("127.0.0.1", self.upstream), timeout=HANDSHAKE),
                server_hostname=self.node_id)
            with self._guard:
                if node not in self.members:
                    return
                self._open.setdefault(node, set()).update((client, upstream))
            try:
                _pump(client, upstream, self.stopping)
            finally:
                with self._guard:
                    self._open.get(node, set()).difference_update((client, upstream))
        except (OSError, ValueError) as exc:
            log.debug("etcd's gate dropped %s: %s", peer[0], exc)
        finally:
            for sock in (client or conn, upstream):
                if sock is not None:
                    sock.close()

    def _admitted(self, node):
        with self._guard:
            if node in self.members:
                return True
            asked = self._asked
        if time.monotonic() - asked > ASK_AGAIN:  # a node that joined a moment ago
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - Docker did not answer: the known nodes stand
                log.warning("etcd's gate could not look at the swarm's nodes: %s", exc)
        with self._guard:
            return node in self.members


def _pump(a, b, stopping):
    """Pass bytes both ways between two TLS sockets until either ends (one
    thread: an SSL socket is not to be read and written from two at once)."""
    for sock in (a, b):
        sock.setblocking(False)
    pending = {a: bytearray(), b: bytearray()}  # what is to be written to each
    other = {a: b, b: a}
    while not stopping.is_set():
        readable = [s for s in (a, b) if len(pending[other[s]]) < BACKLOG]
        ready = [s for s in readable if s.pending()]
        if not ready:
            ready, writable, _ = select.select(readable, [s for s in (a, b) if pending[s]], [], 1.0)
        else:
            writable = [s for s in (a, b) if pending[s]]
        for sock in ready:
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            if not data:
                return
            pending[other[sock]] += data
        for sock in writable:
            try:
                sent = sock.send(pending[sock])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                continue
            del pending[sock][:sent]


def _common_name(certificate):
    for part in (certificate or {}).get("subject", ()):
        for key, value in part:
            if key == "commonName":
                return value
    return None


def _shut(sock):
    """Shut a socket that another thread pumps (the socket's own shutdown,
    not the SSL layer's, which that thread is using)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass
