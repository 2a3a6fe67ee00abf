"""The parts of an etcd transaction as the v3 JSON gateway takes them:
compares (``absent``, ``present``, ``value_is``, ``value_is_not``) and
operations (``put_op``, ``get_op``, ``delete_op``); keys and values base64."""

import base64


def b64(text):
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def prefix_end(prefix):
    """The end of a prefix range: the prefix with its last byte + 1."""
    raw = prefix.encode()
    return raw[:-1] + bytes([raw[-1] + 1])


def key_range(key, prefix=False):
    """A request's keys: ``key``, or with ``prefix`` every key that starts with it."""
    keys = {"key": b64(key)}
    if prefix:
        keys["range_end"] = b64(prefix_end(key))
    return keys


def absent(key):
    return {"key": b64(key), "result": "EQUAL", "target": "CREATE", "create_revision": "0"}


def present(key):
    return {"key": b64(key), "result": "GREATER", "target": "CREATE", "create_revision": "0"}


def value_is(key, value):
    return {"key": b64(key), "result": "EQUAL", "target": "VALUE", "value": b64(value)}


def value_is_not(key, value):
    return {"key": b64(key), "result": "NOT_EQUAL", "target": "VALUE", "value": b64(value)}


def put_op(key, value, lease=0):
    """A transaction's put."""
    request = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def get_op(key, prefix=False):
    """A transaction's range."""
    return {"request_range": key_range(key, prefix)}


def delete_op(key, prefix=False):
    """A transaction's delete."""
    return {"request_delete_range": key_range(key, prefix)}
