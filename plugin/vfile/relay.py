"""A volume's SMB relay on a node. The node mounts the share at
``127.0.0.1:<relay port>``; the relay forwards each connection to wherever the
volume's file server runs now, which the plugin writes to the target file.
When the server moves (its node died, swarm started it elsewhere), the
plugin rewrites the file and the relay drops its connections: the SMB
client connects again and reaches the new server, and the mounts the
containers hold keep working. It runs in a session of its own, so a restart
of the plugin leaves it (and the mounts) running.

    python -m plugin.vfile.relay TARGET_FILE PORT_FILE
"""

import os
import socket
import sys
import threading
import time

from . import pids

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
        threading.Thread(target=self._follow, daemon=True).start()
        while True:
            client, _ = listener.accept()
            threading.Thread(target=self._forward, args=(client,), daemon=True).start()

    def _forward(self, client):
        try:
            upstream = socket.create_connection(self.target(), timeout=5)
        except (OSError, ValueError):
            client.close()
            return
        upstream.settimeout(None)
        with self.guard:
            self.connections.update((client, upstream))
        reverse = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
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


class Relays:
    """The relays of this node's mounted volumes, under ``<state dir>/relay/<volume>``."""

    def __init__(self, state_dir):
        self.root = os.path.join(state_dir, "relay")

    def _files(self, volume):
        folder = os.path.join(self.root, volume)
        return folder, os.path.join(folder, "target"), os.path.join(folder, "port"), os.path.join(folder, "pid")

    def point(self, volume, address, port):
        """The local port of the volume's relay, started if it does not run,
        now forwarding to ``address:port``."""
        import subprocess

        folder, target, port_file, pid_file = self._files(volume)
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(target) or open(target).read().strip() != f"{address}:{port}":
            pids.write(target, f"{address}:{port}")  # a new target drops the relay's connections
        if pids.running(pid_file, target) and os.path.exists(port_file):
            return int(open(port_file).read())
        if os.path.exists(port_file):
            os.unlink(port_file)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        process = subprocess.Popen([sys.executable, "-m", "plugin.vfile.relay", target, port_file],
                                   cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        pids.write(pid_file, process.pid)
        deadline = time.monotonic() + 10
        while not os.path.exists(port_file):
            if process.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"the SMB relay of {volume} did not start")
            time.sleep(0.01)
        return int(open(port_file).read())

    def move(self, volume, address, port):
        """Point a running relay at the server's new place (nothing if none runs)."""
        folder, target, _, pid_file = self._files(volume)
        if not pids.running(pid_file, target):
            return False
        with open(target) as f:
            if f.read().strip() == f"{address}:{port}":
                return False
        pids.write(target, f"{address}:{port}")
        return True

    def stop(self, volume):
        import shutil

        folder, target, _, pid_file = self._files(volume)
        pids.stop(pid_file, target)
        shutil.rmtree(folder, ignore_errors=True)

    def volumes(self):
        return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []


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
