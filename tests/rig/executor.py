"""A real ``vmdk-opsd`` on a real unix socket for the tests, and a guest-side
client that speaks its wire protocol with a VM's credential."""

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

from plugin.vsphere import protocol

from . import REPO, missing


class Executor:
    def __init__(self, home):
        self.home = str(home)
        self.socket = os.path.join(self.home, "run", "vmdk-opsd.sock")
        self.process = None
        self.tokens = {}
        self._tokens_lock = threading.Lock()

    def start(self, *args, crash_at=None):
        env = dict(os.environ, VMDKOPS_HOME=self.home)
        env.pop("VMDKOPS_CRASH_AT", None)
        if crash_at:
            env["VMDKOPS_CRASH_AT"] = crash_at
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vmdkops_admin.executor.main", *args], cwd=REPO, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while self._pid_file() != self.process.pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                out, err = self.process.communicate(timeout=5)
                raise RuntimeError(f"vmdk-opsd did not start: {err.decode()}")
            time.sleep(0.02)
        return self

    def _pid_file(self):
        try:
            with open(os.path.join(self.home, "run", "vmdk-opsd.pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            return None

    def stop(self, sig=signal.SIGTERM):
        stop_process(self.process, sig)

    def token(self, vm_name):
        with self._tokens_lock:
            return self._token(vm_name)

    def _token(self, vm_name):
        if vm_name not in self.tokens:
            self.tokens[vm_name] = self._issue(vm_name)
        return self.tokens[vm_name]

    def _issue(self, vm_name):
        """A new credential for the VM: issued in this process when its state
        root is the executor's (a test's, which is quicker), else as an
        administrator issues it (``host vm token``) in the executor's."""
        if os.path.abspath(os.environ.get("VMDKOPS_HOME", "")) == os.path.abspath(self.home):
            from vmdkops_admin.backends import get_backend
            from vmdkops_admin.executor import credentials

            return credentials.issue(get_backend().find_vm(vm_name).uuid, rotate=True)
        issued = subprocess.run([sys.executable, "-c", "from vmdkops_admin.cli import main; main()", "host", "vm",
                                 "token", "--name", vm_name, "--rotate"], cwd=REPO, capture_output=True, text=True,
                                env=dict(os.environ, VMDKOPS_HOME=self.home))
        if issued.returncode != 0:
            raise RuntimeError(f"no credential for {vm_name}: {issued.stdout}{issued.stderr}")
        return issued.stdout.strip()

    def write_credential(self, vm_name, path):
        """The VM's credential in the file a plugin reads it from."""
        with open(path, "w") as f:
            f.write(self.token(vm_name))
        return path

    def call(self, vm_name, cmd, name="", opts=None, credential=None):
        message = protocol.request(cmd, name, opts,
                                   credential if credential is not None else self.token(vm_name))
        return protocol.call(protocol.unix_connector(self.socket), message)

    def ok(self, vm_name, cmd, name="", opts=None):
        reply = self.call(vm_name, cmd, name, opts)
        assert not (isinstance(reply, dict) and "Error" in reply), reply
        return reply

    def err(self, vm_name, cmd, name="", opts=None):
        reply = self.call(vm_name, cmd, name, opts)
        assert isinstance(reply, dict) and set(reply) == {"Error"}, reply
        return reply["Error"]


def stop_process(process, sig=signal.SIGTERM, timeout=30):
    """Signal a process we started and wait for it; SIGKILL if it does not go in time."""
    if process is not None and process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def release_loops(home):
    """Detach the loop devices a test's executor attached, whatever happened."""
    from vmdkops_admin.backends.local import loop_backing_file

    try:
        with open(os.path.join(str(home), "attachments.json")) as f:
            state = json.load(f)
    except (OSError, ValueError):
        return
    for disks in state.values():
        for disk in disks:
            if loop_backing_file(disk["device"]) == disk["extent"]:
                subprocess.run(["losetup", "--detach", disk["device"]], capture_output=True)


def require_root_and_loops():
    import pytest

    if os.geteuid() != 0:
        missing("root (loop devices need it)")
    if subprocess.run(["losetup", "--version"], capture_output=True).returncode != 0:
        missing("losetup (util-linux)")
    if not os.path.exists("/dev/loop-control"):
        missing("loop device support (/dev/loop-control)")
    return pytest


def bound_files(under="/"):
    """(st_dev, st_ino) -> loop devices, of every bound loop device of this
    machine whose file is under the folder ``under``."""
    root = os.path.join(os.path.realpath(under), "")
    found = {}
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(backing) as f:
                path = f.read().strip().removesuffix(" (deleted)")
            st = os.stat(path)
        except OSError:
            continue
        if path.startswith(root):
            found.setdefault((st.st_dev, st.st_ino), []).append("/dev/" + backing.split("/")[3])
    return found


def loops_on(path):
    st = os.stat(path)
    return bound_files().get((st.st_dev, st.st_ino), [])


def no_file_has_two_loops(under):
    """No file under the folder ``under`` (a test's datastores: other tests
    may run beside it) has two loop devices."""
    doubled = {key: devices for key, devices in bound_files(under).items() if len(devices) > 1}
    assert doubled == {}
