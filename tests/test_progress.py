"""Long commands show progress where a person watches: click's bar on stderr
when it is a terminal and the output is a table; never in JSON or CSV, on a
pipe, or under cron. The commands run as real processes, stderr on a pty."""

import os
import pty
import shutil
import subprocess
import sys
import threading

import pytest

from test_legacy import build_legacy

pytestmark = pytest.mark.usefixtures("configured")


def run(*args, terminal=True):
    """(exit code, stdout, what stderr showed) of vmdkops_admin as a process."""
    script = shutil.which("vmdkops_admin", path=os.path.dirname(sys.executable))
    if not terminal:
        result = subprocess.run([script, *args], capture_output=True, text=True, timeout=120)
        return result.returncode, result.stdout, result.stderr
    master, slave = pty.openpty()
    process = subprocess.Popen([script, *args], stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    shown = []

    def read_terminal():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the process closed its end
                return
            if not data:
                return
            shown.append(data)

    reader = threading.Thread(target=read_terminal)
    reader.start()
    out = process.stdout.read()
    process.wait(timeout=120)
    reader.join(timeout=30)
    os.close(master)
    return process.returncode, out, b"".join(shown).decode()


@pytest.fixture
def volumes(executor):
    for i in range(3):
        executor.ok("VM1", "create", f"p{i}", {"vsan-policy-name": "gold"} if i else None)
    return executor


@pytest.fixture
def gold(admin):
    admin.ok("policy", "create", "--name", "gold", "--content", '(("hostFailuresToTolerate" i1))')


def test_reconcile_shows_progress_on_a_terminal(gold, volumes):
    code, out, shown = run("volume", "reconcile")
    assert code == 0 and out == "Index, metadata, disks and attachments agree.\n"
    assert "Reconciling" in shown and "100%" in shown
    for args, terminal in ((("volume", "reconcile", "--output-format=json"), True),
                           (("volume", "reconcile", "--output-format=csv"), True),
                           (("volume", "reconcile"), False)):
        code, out, shown = run(*args, terminal=terminal)
        assert code == 0 and "Reconciling" not in shown and "Reconciling" not in out, (args, shown)


def test_policy_update_shows_progress_on_a_terminal(gold, volumes):
    code, out, shown = run("policy", "update", "--name", "gold", "--content", '(("hostFailuresToTolerate" i2))')
    assert code == 0 and out == "Successfully updated policy gold\nApplied to 2 volumes.\n"
    assert "Updating volumes" in shown and "100%" in shown
    code, out, shown = run("policy", "update", "--name", "gold", "--content", '(("hostFailuresToTolerate" i3))',
                           terminal=False)
    assert code == 0 and shown == ""


def test_import_shows_progress_on_a_terminal(admin, inventory, tmp_path):
    path = str(tmp_path / "auth-db-1.2")
    build_legacy(path, "1.2", inventory.datastore_by_name("DS1").url, inventory.datastore_by_name("DS2").url)
    code, out, shown = run("config", "import", "--from-vdvs", path, "--dry-run")
    assert code == 0 and "Importing" in shown and "100%" in shown
    code, out, shown = run("config", "import", "--from-vdvs", path, "--dry-run", terminal=False)
    assert code == 0 and "Importing" not in shown + out
