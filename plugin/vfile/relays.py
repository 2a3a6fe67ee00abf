"""The plugin's side of the SMB relays (``relay``): one per volume mounted
on this node, under ``<state dir>/relay/<volume>``, each a process of its
own with three files: ``target`` (where the volume's file server runs, which
the plugin writes), ``port`` (the relay's local port, which the relay
writes) and ``pid``."""

import os
import shutil
import subprocess
import sys
import time

from . import pids

START_TIMEOUT = 10.0


def _read(path):
    with open(path) as f:
        return f.read().strip()


class Relays:
    def __init__(self, state_dir):
        self.root = os.path.join(state_dir, "relay")

    def _files(self, volume):
        folder = os.path.join(self.root, volume)
        return folder, os.path.join(folder, "target"), os.path.join(folder, "port"), os.path.join(folder, "pid")

    def point(self, volume, address, port):
        """The local port of the volume's relay, started if it does not run,
        now forwarding to ``address:port``."""
        folder, target, port_file, pid_file = self._files(volume)
        os.makedirs(folder, exist_ok=True)
        if not os.path.exists(target) or _read(target) != f"{address}:{port}":
            pids.write(target, f"{address}:{port}")  # a new target drops the relay's connections
        if pids.running(pid_file, target) and os.path.exists(port_file):
            return int(_read(port_file))
        if os.path.exists(port_file):
            os.unlink(port_file)
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        process = subprocess.Popen([sys.executable, "-m", "plugin.vfile.relay", target, port_file],
                                   cwd=repo, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        pids.write(pid_file, process.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(port_file):
            if process.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"the SMB relay of {volume} did not start")
            time.sleep(0.01)
        return int(_read(port_file))

    def move(self, volume, address, port):
        """Point a running relay at the server's new place (nothing if none runs)."""
        folder, target, _, pid_file = self._files(volume)
        if not pids.running(pid_file, target) or _read(target) == f"{address}:{port}":
            return False
        pids.write(target, f"{address}:{port}")
        return True

    def stop(self, volume):
        folder, target, _, pid_file = self._files(volume)
        pids.stop(pid_file, target)
        shutil.rmtree(folder, ignore_errors=True)

    def volumes(self):
        return sorted(os.listdir(self.root)) if os.path.isdir(self.root) else []
