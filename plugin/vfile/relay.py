"""A volume's SMB relay on a node. The node mounts the share at
``127.0.0.1:<relay port>``; the relay forwards each connection to wherever the
volume's file server runs now, which the plugin writes to the target file.
When the server moves (its node died, swarm started it elsewhere), the
plugin rewrites the file and the relay drops its connections: the SMB
client connects again and reaches the new server, and the mounts the
containers hold keep working. It runs in a session of its own, so a restart
of the plugin leaves it (and the mounts) running; the plugin starts and
points it through ``relays.Relays``.

    python -m plugin.vfile.relay TARGET_FILE PORT_FILE
"""

import os
import socket
import sys
import threading
import time

CHECK = 0.2


def _shut(sockets):
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _pipe(source, sink):
    try:
        while True:
            data = source.recv(1 << 16)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shut((source, sink))


class Relay:
    def __init__(self, target_file):
        self.target_file = target_file
        self.connections = set()
        self.guard = threading.Lock()

    def target(self):
        with open(self.target_file) as f:
            host, _, port = f.read().strip().rpartition(":")
        return host, int(port)

    def serve(self, listener):
        threading.Thread(target=self._follow, name="follow", daemon=True).start()
        while True:
            client, _ = listener.accept()
            threading.Thread(target=self._forward, args=(client,), name="forward", daemon=True).start()

    def _forward(self, client):
        try:
            upstream = socket.create_connection(self.target(), timeout=5)
        except (OSError, ValueError):
            client.close()
            return
        upstream.settimeout(None)
        with self.guard:
            self.connections.update((client, upstream))
        reverse = threading.Thread(target=_pipe, args=(upstream, client), name="reverse", daemon=True)
        reverse.start()
        _pipe(client, upstream)
        reverse.join()
        with self.guard:
            self.connections.difference_update((client, upstream))
        client.close()
        upstream.close()

    def _follow(self):
        """Drop every connection when the target changes."""
        seen = os.stat(self.target_file).st_mtime_ns
        while True:
            time.sleep(CHECK)
            try:
                now = os.stat(self.target_file).st_mtime_ns
            except OSError:
                continue
            if now != seen:
                seen = now
                with self.guard:
                    _shut(list(self.connections))


def main(argv):
    target_file, port_file = argv
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    tmp = port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{listener.getsockname()[1]}\n")
    os.replace(tmp, port_file)
    Relay(target_file).serve(listener)


if __name__ == "__main__":
    main(sys.argv[1:])
