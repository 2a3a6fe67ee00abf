"""The wire protocol against a real vmdk-opsd, fuzzed with hypothesis: every
malformed frame or request gets an error reply or a closed connection, the
server keeps serving, and nothing is ever written outside ``dockvols``."""

import json
import os
import socket
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugin.vsphere import protocol

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def raw_exchange(executor, data, shutdown=True):
    """Send raw bytes; the decoded reply, or None when the server closed the connection."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(15)
    sock.connect(executor.socket)
    try:
        sock.sendall(data)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        try:
            return json.loads(protocol.read_frame(sock, protocol.MAX_REPLY))
        except (protocol.ProtocolError, ConnectionError, struct.error):
            return None
    finally:
        sock.close()


def frame(payload):
    return protocol.HEADER.pack(protocol.MAGIC, len(payload) + 1) + payload + b"\0"


def still_serving(executor):
    assert executor.ok("VM1", "version")["version"]


def files_outside_dockvols(inventory):
    outside = []
    for ds in inventory.datastores():
        for folder, _, files in os.walk(ds.path):
            for name in files:
                path = os.path.join(folder, name)
                if not path.startswith(os.path.join(ds.path, "dockvols") + os.sep):
                    outside.append(path)
    return outside


@FUZZ
@given(st.binary(max_size=64))
def test_random_bytes(executor, data):
    reply = raw_exchange(executor, data)
    assert reply is None or set(reply) == {"Error"}
    still_serving(executor)


@FUZZ
@given(magic=st.one_of(st.just(protocol.MAGIC), st.integers(0, 2**32 - 1)),
       length=st.one_of(st.sampled_from([0, 1, 4096, 4097, 2**31, 2**32 - 1]), st.integers(0, 5000)),
       payload=st.binary(max_size=300))
def test_bad_headers_and_lengths(executor, magic, length, payload):
    reply = raw_exchange(executor, struct.pack("<II", magic, length) + payload)
    assert reply is None or set(reply) == {"Error"}
    still_serving(executor)


@FUZZ
@given(st.binary(min_size=1, max_size=200))
def test_invalid_utf8_and_json(executor, payload):
    payload = payload.replace(b"\0", b"")
    reply = raw_exchange(executor, frame(payload))
    if reply is not None and "Error" not in (reply if isinstance(reply, dict) else {}):
        # Only a valid request could succeed, and it carries no credential here.
        pytest.fail(f"unexpected success: {reply}")
    still_serving(executor)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children,
                                                                     max_size=4),
    max_leaves=10)


@FUZZ
@given(cmd=st.one_of(st.sampled_from(["create", "remove", "attach", "detach", "get", "list",
                                      "version"]), json_values),
       details=st.one_of(json_values, st.fixed_dictionaries({"Name": json_values, "Opts": json_values})),
       version=st.one_of(st.just("2"), json_values))
def test_wrong_types(executor, inventory, cmd, details, version):
    message = {"cmd": cmd, "details": details, "version": version, "credential": executor.token("VM1")}
    reply = raw_exchange(executor, frame(json.dumps(message).encode()))
    assert reply is None or reply == [] or isinstance(reply, (dict, list))
    if isinstance(reply, dict) and "Error" in reply:
        assert "Internal Error" not in reply["Error"], reply
    assert files_outside_dockvols(inventory) == []
    still_serving(executor)


hostile_names = st.one_of(
    st.sampled_from(["../x", "..", "a/b", "a\\b", "x\0y", "x" * 101, "x" * 100, "v-123456",
                     "v-12345", "..@DS1", "v@../../etc", "v@DS1/..", "v@", "@DS1", "é✓🙂",
                     "v\n", " ", "v-flat", "v.vmfd", "-v", ".hidden"]),
    st.text(max_size=110))


@FUZZ
@given(name=hostile_names)
def test_hostile_names(executor, inventory, name):
    reply = executor.call("VM1", "create", name, {"size": "1mb"})
    if reply is None:
        info = executor.ok("VM1", "get", name)
        assert info["capacity"]["size"] == "1MB"
        executor.ok("VM1", "remove", name)
    else:
        assert set(reply) == {"Error"} and "Internal Error" not in reply["Error"], reply
    assert files_outside_dockvols(inventory) == []
    still_serving(executor)


def test_an_idle_client_does_not_stop_others(executor):
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(executor.socket)
    idle.sendall(struct.pack("<I", protocol.MAGIC))  # half a header, then nothing
    try:
        start = time.monotonic()
        still_serving(executor)
        assert time.monotonic() - start < 2
    finally:
        idle.close()


def test_tcp_with_tls(home, inventory, tmp_path):
    """The TCP listener speaks TLS only; a plain client is dropped and the server goes on."""
    import ssl
    import subprocess

    from rig.executor import Executor, release_loops

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                           "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if made.returncode != 0:
        from rig import missing
        missing("openssl")
    running = Executor(home).start("--no-unix-socket", "--tcp", "127.0.0.1:0",
                                   "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        listeners = json.loads((home / "run" / "vmdk-opsd.json").read_text())["listeners"]
        assert len(listeners) == 1 and listeners[0].startswith("tcp+tls:127.0.0.1:")
        port = int(listeners[0].rsplit(":", 1)[1])
        plain = socket.create_connection(("127.0.0.1", port), timeout=15)
        plain.sendall(frame(b'{"cmd": "version"}'))
        try:
            assert plain.recv(100) == b""  # not TLS: dropped
        except ConnectionResetError:
            pass
        plain.close()
        context = ssl.create_default_context(cafile=str(cert))
        connect = protocol.tcp_connector("127.0.0.1", port, context)
        message = protocol.request("create", "over-tls", {"size": "1mb"}, running.token("VM1"))
        assert protocol.call(connect, message) is None
        message = protocol.request("list", "", None, running.token("VM1"))
        assert protocol.call(connect, message) == [{"Name": "over-tls@DS1", "Attributes": {}}]
    finally:
        running.stop()
        release_loops(home)
