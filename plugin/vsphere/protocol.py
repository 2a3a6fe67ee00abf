"""The guest -> executor wire protocol, shared by the plugin (client) and the
executor (server); standard library only.

Each connection carries one request and one reply, framed alike: a 4-byte
magic 0x0badbeef, a 4-byte length that counts the trailing NUL, then UTF-8
JSON and a NUL (little-endian, as the original on x86). A request is
``{"cmd", "details": {"Name", "Opts"}, "version": "2", "credential"}``; a reply
is ``null``, an object, a list, or ``{"Error": text}``."""

import json
import socket
import struct

MAGIC = 0x0BADBEEF
VERSION = "2"
HEADER = struct.Struct("<II")
MAX_PAYLOAD = 4096        # a request; replies (listings) may be larger
MAX_REPLY = 64 * 1024 * 1024


class ProtocolError(Exception):
    pass


def _recv_exact(sock, size):
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 16))
        if not chunk:
            raise ProtocolError("connection closed in the middle of a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def payload_length(header, limit=MAX_PAYLOAD):
    """The length of the payload that follows a frame's header."""
    magic, length = HEADER.unpack(header)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic 0x{magic:08x}")
    if length == 0 or length > limit:
        raise ProtocolError(f"bad length {length}")
    return length


def message_of(payload):
    """The JSON bytes of a frame's payload (without its NUL)."""
    if payload[-1:] != b"\0" or b"\0" in payload[:-1]:
        raise ProtocolError("message is not NUL-terminated text")
    return bytes(payload[:-1])


def read_frame(sock, limit=MAX_PAYLOAD):
    """The JSON bytes of one framed message (without the NUL)."""
    length = payload_length(_recv_exact(sock, HEADER.size), limit)
    return message_of(_recv_exact(sock, length))


def write_frame(sock, payload):
    data = payload + b"\0"
    sock.sendall(HEADER.pack(MAGIC, len(data)) + data)


def encode(obj):
    return json.dumps(obj).encode()


def request(cmd, name="", opts=None, credential=None, version=VERSION):
    message = {"cmd": cmd, "details": {"Name": name, "Opts": opts or {}}, "version": version}
    if credential is not None:
        message["credential"] = credential
    return message


def call(connect, message, timeout=60.0):
    """Send one request over a new connection made by ``connect()`` and return
    the decoded reply."""
    sock = connect()
    try:
        sock.settimeout(timeout)
        write_frame(sock, encode(message))
        return json.loads(read_frame(sock, MAX_REPLY))
    finally:
        sock.close()


def unix_connector(path):
    def connect():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return sock
    return connect


def tcp_connector(host, port, ssl_context=None):
    def connect():
        sock = socket.create_connection((host, port), timeout=10)
        if ssl_context is not None:
            try:
                sock = ssl_context.wrap_socket(sock, server_hostname=host)
            except OSError:
                sock.close()
                raise
        return sock
    return connect
