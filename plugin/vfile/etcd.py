"""A client of etcd's v3 JSON gateway (``/v3/``) in the standard library:
keys and values base64, int64 values as JSON strings. Each request has a
timeout (2 s) and tries the endpoints in turn over kept-alive HTTP; when
none answers, or the cluster has no leader, the error names etcd and says
so, within the timeout of each endpoint: never a hang. A transaction's
compares and operations are built by ``txn``.

A mutex is the etcd recipe: a key under the lock's prefix bound to the
caller's lease; the holder is the key with the lowest create revision."""

import base64
import http.client
import json
import logging
import secrets
import socket
import ssl
import threading
import time

from .txn import absent, b64, delete_op, key_range, put_op

log = logging.getLogger("vmdkops.plugin")
TIMEOUT = 2.0
FAILED_FOR = 30.0  # seconds an endpoint that failed is tried last
ELECTION = 5.0  # seconds a request waits out an election (etcd's takes one or two)
STREAM_AGAIN = 0.2  # seconds before a watch stream that ended is opened again
# How a kept-alive connection that the other end closed fails (over TLS: the
# gate of a manager whose etcd or plugin restarted); it is opened again once.
CLOSED = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError,
          ssl.SSLZeroReturnError)


class EtcdError(Exception):
    """etcd cannot be reached, has no quorum, or refused a request."""


class WaitTimeout(EtcdError):
    """A key did not take the value waited for in time."""


class LeaseNotFound(EtcdError):
    """etcd no longer knows the lease: it expired while etcd was out of
    reach or had no quorum."""


def _text(value):
    return base64.b64decode(value).decode() if value else ""


class _Election(Exception):
    """A member answered ``leader changed``: the cluster is electing a leader."""


class KeyValue:
    __slots__ = ("key", "value", "create_revision", "mod_revision", "lease")

    def __init__(self, kv):
        self.key = _text(kv.get("key"))
        self.value = _text(kv.get("value"))
        self.create_revision = int(kv.get("create_revision", 0))
        self.mod_revision = int(kv.get("mod_revision", 0))
        self.lease = int(kv.get("lease", 0))


class _TlsConnection(http.client.HTTPSConnection):
    """HTTPS whose server must have the certificate name ``server_name``
    (a swarm manager's certificate names no address: ``pki.MANAGER_NAME``)."""

    def __init__(self, host, port, timeout, context, server_name):
        super().__init__(host, port, timeout=timeout, context=context)
        self.server_name = server_name or host

    def connect(self):
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self._context.wrap_socket(sock, server_hostname=self.server_name)
        except BaseException:
            sock.close()
            raise


class Etcd:
    """``endpoints()`` gives the ``host:port`` list to try, read at each
    request (the swarm's managers change). With ``tls`` (its ``context()``
    and the ``server_name`` to check, None for each endpoint's host) every
    request goes over TLS."""

    def __init__(self, endpoints, timeout=TIMEOUT, tls=None):
        self.endpoints = endpoints if callable(endpoints) else (lambda: list(endpoints))
        self.timeout = timeout
        self.tls = tls
        self._local = threading.local()
        self._watches, self._watch_guard = set(), threading.Lock()
        self._answered, self._failed, self._fare_guard = None, {}, threading.Lock()

    def _ordered(self):
        """The endpoints, the one that answered last first and those that
        failed lately last: a dead manager costs one timeout, not one per request."""
        now = time.monotonic()
        with self._fare_guard:
            answered, failed = self._answered, dict(self._failed)

        def rank(endpoint):
            when = failed.get(endpoint)
            return endpoint != answered, when is not None and now - when < FAILED_FOR
        return sorted(self.endpoints(), key=rank)

    def _fared(self, endpoint, answered):
        with self._fare_guard:
            if answered:
                self._answered = endpoint
                self._failed.pop(endpoint, None)
            else:
                self._failed[endpoint] = time.monotonic()

    def requests(self):
        """How many requests this thread has made (the benchmark counts them per mount)."""
        return getattr(self._local, "requests", 0)

    def _counted(self):
        self._local.requests = self.requests() + 1

    # -- transport ---------------------------------------------------------------------

    def _open(self, endpoint):
        host, _, port = endpoint.rpartition(":")
        if self.tls is None:
            return http.client.HTTPConnection(host, int(port), timeout=self.timeout)
        return _TlsConnection(host, int(port), self.timeout, self.tls.context(), self.tls.server_name)

    def _connection(self, endpoint):
        connections = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
        if endpoint not in connections:
            connections[endpoint] = self._open(endpoint)
        return connections[endpoint]

    def _drop(self, endpoint):
        connection = getattr(self._local, "connections", {}).pop(endpoint, None)
        if connection is not None:
            connection.close()

    def call(self, path, body):
        """The gateway's answer to ``POST /v3/<path>``, from the first endpoint
        that answers. An election under way (``leader changed``: the
        cluster has its quorum, a new leader comes within moments) is waited
        out for up to ``ELECTION`` seconds."""
        deadline = time.monotonic() + ELECTION
        while True:
            try:
                return self._call_once(path, json.dumps(body).encode())
            except _Election:
                if time.monotonic() > deadline:
                    raise EtcdError(f"etcd elected no leader within {ELECTION:.0f} s ({path})") from None
                time.sleep(0.1)

    def _call_once(self, path, data):
        problems = []
        try:
            endpoints = self._ordered()
        except Exception as exc:  # noqa: BLE001 - the swarm did not say where etcd is
            raise EtcdError(f"Failed to create etcd client: {exc}") from None
        if not endpoints:
            raise EtcdError("Failed to create etcd client: no etcd endpoint is known (no swarm manager?)")
        for endpoint in endpoints:
            for attempt in (1, 2):  # a kept-alive connection the server closed is opened again once
                connection = self._connection(endpoint)
                try:
                    self._counted()
                    connection.request("POST", f"/v3/{path}", body=data,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._drop(endpoint)
                    if attempt == 1 and isinstance(exc, CLOSED):
                        continue
                    problems.append(f"{endpoint}: {exc or type(exc).__name__}")
                    self._fared(endpoint, False)
                    break
                if response.status == 200:
                    self._fared(endpoint, True)
                    return json.loads(answer)
                message = _error_text(answer)
                if response.status in (503, 504) or "leader" in message or "timed out" in message:
                    problems.append(f"{endpoint}: {message or response.status}")
                    self._fared(endpoint, False)
                    break
                error = LeaseNotFound if "requested lease not found" in message else EtcdError
                raise error(f"etcd refused {path}: {message or response.status}")
        if any("leader changed" in p for p in problems):
            raise _Election()
        if any("leader" in p or "timed out" in p or "deadline" in p for p in problems):
            # A member answered, or took the connection and then could not: it has no leader.
            raise EtcdError("etcd has no quorum (no leader): more than half of its members (the swarm "
                            f"managers) must be up. ETCD maybe unhealthy ({'; '.join(problems)})")
        raise EtcdError(f"Failed to create etcd client: no etcd member answered ({'; '.join(problems)})")

    # -- keys ------------------------------------------------------------------------------

    def get(self, key):
        kvs = self.range(key)
        return kvs[0].value if kvs else None

    def range(self, key, prefix=False, sort_by_create=False, limit=0):
        body = key_range(key, prefix)
        if sort_by_create:
            body.update(sort_order="ASCEND", sort_target="CREATE")
        if limit:
            body["limit"] = str(limit)
        return [KeyValue(kv) for kv in self.call("kv/range", body).get("kvs", [])]

    def put(self, key, value, lease=0):
        self.call("kv/put", put_op(key, value, lease)["request_put"])

    def delete(self, key, prefix=False):
        self.call("kv/deleterange", delete_op(key, prefix)["request_delete_range"])

    def txn(self, compare, success, failure=()):
        """(succeeded, [the KeyValues of each range, in order])."""
        answer = self.call("kv/txn", {"compare": list(compare), "success": list(success),
                                      "failure": list(failure)})
        ranges = [[KeyValue(kv) for kv in r["response_range"].get("kvs", [])]
                  for r in answer.get("responses", []) if "response_range" in r]
        return bool(answer.get("succeeded")), ranges

    def revision(self):
        return int(self.call("kv/range", {"key": b64("\0"), "count_only": True})["header"]["revision"])

    # -- leases ----------------------------------------------------------------------------

    def grant(self, ttl):
        return int(self.call("lease/grant", {"TTL": str(ttl)})["ID"])

    def keepalive(self, lease):
        """The lease's time left after renewing it; 0 when it has expired."""
        answer = self.call("lease/keepalive", {"ID": str(lease)})
        return int(answer.get("result", {}).get("TTL", 0))

    def revoke(self, lease):
        self.call("lease/revoke", {"ID": str(lease)})

    # -- the cluster -----------------------------------------------------------------------

    def members(self):
        return self.call("cluster/member/list", {}).get("members", [])

    def add_member(self, peer_url):
        return self.call("cluster/member/add", {"peerURLs": [peer_url]})["member"]

    def remove_member(self, member_id):
        self.call("cluster/member/remove", {"ID": str(member_id)})

    def status(self):
        """The answering member's ``maintenance/status`` (its id in
        ``header.member_id``, the leader's in ``leader``)."""
        return self.call("maintenance/status", {})

    def move_leader(self, member_id):
        """Hand the leadership over (asked of the leader itself)."""
        self.call("maintenance/transfer-leadership", {"targetID": str(member_id)})

    # -- locks -----------------------------------------------------------------------------

    def lock(self, name, lease, timeout):
        """Hold the mutex ``name`` (bound to ``lease``) until the returned
        ``unlock()``; ``EtcdError`` when it is not ours within ``timeout``."""
        mine = f"{name}/{lease:x}-{secrets.token_hex(4)}"  # one key per holder, threads included
        self.txn([absent(mine)], [put_op(mine, "", lease)])
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            [owner] = self.range(name + "/", prefix=True, sort_by_create=True, limit=1) or [None]
            if owner is not None and owner.key == mine:
                return lambda: self._unlock(mine)
            if owner is None:  # our key is gone: the lease expired
                self.txn([absent(mine)], [put_op(mine, "", lease)])
            if time.monotonic() > deadline:
                self._unlock(mine)
                raise EtcdError("ETCD Lock blocking wait timeout")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _unlock(self, key):
        try:
            self.delete(key)
        except EtcdError as exc:
            log.warning("unlock of %s failed (its lease will free it): %s", key, exc)

    # -- watching --------------------------------------------------------------------------

    def _events(self, body, deadline=None):
        """The events of one ``/v3/watch`` stream of ``body``, opened on the
        first endpoint (in ``call()``'s ranking) that takes it, until it ends
        (its member went away, ``close_watches()``) or ``deadline`` (a
        monotonic time) passes. An endpoint that fails before its first
        event leaves the stream to the next; a stream that gave events and
        fails just ends, and the caller goes on from the revision it saw."""
        data = json.dumps(body).encode()
        for endpoint in self._ordered():
            connection, given = self._open(endpoint), False
            with self._watch_guard:
                self._watches.add(connection)
            try:
                self._counted()
                connection.request("POST", "/v3/watch", body=data, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                self._fared(endpoint, response.status == 200)
                if response.status != 200:
                    continue
                while True:
                    connection.sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.01))
                    line = response.readline()
                    if not line:
                        return
                    try:
                        events = json.loads(line).get("result", {}).get("events", [])
                    except ValueError:
                        continue
                    for event in events:
                        given = True
                        yield event
            except (OSError, http.client.HTTPException) as exc:
                log.debug("watch on %s ended: %s", endpoint, exc)
                if given or (deadline is not None and time.monotonic() >= deadline):
                    return
            finally:
                with self._watch_guard:
                    self._watches.discard(connection)
                connection.close()

    def watch(self, prefix, start_revision, on_event):
        """Call ``on_event(kind, KeyValue, previous KeyValue or None)`` for
        each change under ``prefix`` from ``start_revision`` until the stream
        ends; returns the revision to go on from."""
        body = {"create_request": dict(key_range(prefix, prefix=True), prev_kv=True,
                                       start_revision=str(start_revision))}
        revision = start_revision
        for event in self._events(body):
            kv = KeyValue(event["kv"])
            revision = max(revision, kv.mod_revision + 1)
            previous = KeyValue(event["prev_kv"]) if "prev_kv" in event else None
            on_event(event.get("type", "PUT"), kv, previous)
        return revision

    def wait_until(self, key, wanted, timeout):
        """True once ``key`` has the value ``wanted``, False if it is deleted
        (or absent); ``WaitTimeout`` after ``timeout`` seconds. One read, then
        a watch from the read's revision: two requests however long it takes
        (more only when a stream ends and is opened again)."""
        answer = self.call("kv/range", {"key": b64(key)})
        kvs = answer.get("kvs", [])
        if not kvs:
            return False
        if _text(kvs[0].get("value")) == wanted:
            return True
        deadline = time.monotonic() + timeout
        revision = int(answer["header"]["revision"]) + 1
        while time.monotonic() < deadline:
            body = {"create_request": {"key": b64(key), "start_revision": str(revision)}}
            for event in self._events(body, deadline):
                if event.get("type") == "DELETE":
                    return False
                if _text(event["kv"].get("value")) == wanted:
                    return True
                revision = int(event["kv"]["mod_revision"]) + 1
            time.sleep(min(STREAM_AGAIN, max(deadline - time.monotonic(), 0)))
        raise WaitTimeout(f"Timeout reached; BlockingWait is not complete (waiting for {key} to be {wanted})")

    def close_watches(self):
        with self._watch_guard:
            for connection in list(self._watches):
                if connection.sock is not None:
                    try:
                        connection.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass


def _error_text(answer):
    try:
        data = json.loads(answer)
    except ValueError:
        return answer.decode(errors="replace").strip()
    return str(data.get("error") or data.get("message") or data)
