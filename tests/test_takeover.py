"""A VM whose plugin went silent gives its volume up to another VM of its
vmgroup, but only once it is cut off from it (issue: when a Docker host
dies). Through a real vmdk-opsd on the local backend, with real loop
devices, ext4 and mounts; on SQLite and PostgreSQL."""

import json
import os
import subprocess
import time

import pytest

from conftest import parse_table
from rig.executor import loops_on, no_file_has_two_loops

pytestmark = pytest.mark.usefixtures("configured")

TAKEOVER_AFTER = 2


@pytest.fixture
def guests(tmp_path):
    """A folder for the guests' mounts, a shared mount point: a mount
    namespace made meanwhile (another test's dockerd) gets its mounts as a
    slave, so that an unmount here unmounts them there too and no copy
    keeps a device busy."""
    folder = tmp_path / "guests"
    folder.mkdir()
    for argv in (["mount", "--bind", str(folder), str(folder)], ["mount", "--make-shared", str(folder)]):
        subprocess.run(argv, check=True)
    yield folder
    subprocess.run(["umount", "-R", "-l", str(folder)], check=True)


@pytest.fixture
def held(executor, admin, inventory, guests):
    """VM1's volume db@DS1, attached, with ext4 and a file on it, mounted."""
    from vmdkops_admin.names import DEFAULT_VMGROUP_UUID

    admin.ok(f"vmgroup update --name=_DEFAULT --takeover-after={TAKEOVER_AFTER}s")
    executor.ok("VM1", "create", "db@DS1", {"size": "20mb"})
    device = executor.ok("VM1", "attach", "db@DS1")["Device"]
    subprocess.run(["mkfs.ext4", "-q", "-F", device], check=True, capture_output=True)
    mountpoint = guests / "vm1"
    mountpoint.mkdir()
    subprocess.run(["mount", device, str(mountpoint)], check=True)
    try:
        (mountpoint / "data").write_text("written by VM1\n")
        os.sync()
        extent = os.path.join(inventory.datastore_by_name("DS1").path, "dockvols", DEFAULT_VMGROUP_UUID,
                              "db-flat.vmdk")
        yield {"device": device, "mountpoint": mountpoint, "extent": extent}
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True)


def read_data(device, where):
    where.mkdir()
    subprocess.run(["mount", "-o", "ro", device, str(where)], check=True)
    try:
        return (where / "data").read_text()
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_silent_vms_volume_is_taken_over_only_once_it_is_cut_off(executor, admin, held, guests, tmp_path):
    refused = "Failed to attach volume db@DS1: it is attached to VM VM1"
    assert executor.err("VM2", "attach", "db@DS1").startswith(f"{refused}, whose plugin has never reported")
    executor.ok("VM1", "report")
    assert executor.err("VM2", "attach", "db@DS1") == (
        f"{refused}, whose plugin reported 0 s ago (it is taken over after {TAKEOVER_AFTER} s of silence)")
    time.sleep(TAKEOVER_AFTER + 0.5)
    # Silent, but its guest still has the disk mounted: a live container whose plugin died.
    assert parse_table(admin.ok("volume ls -c volume,taken-over"))[0]["Taken Over"] == "never"
    error = executor.err("VM2", "attach", "db@DS1")
    assert error.startswith(f"{refused}, whose plugin has been silent for {TAKEOVER_AFTER} s, but it "
                            f"cannot be cut off: its device {held['device']} is still mounted on VM VM1; "
                            "nothing was changed. If VM VM1 is dead, power it off, or detach the volume "
                            "from it: vmdkops_admin volume detach --volume=db@DS1 --vmgroup=_DEFAULT --force")
    assert executor.ok("VM1", "get", "db@DS1")["attached to VM"] == "VM1"
    assert loops_on(held["extent"]) == [held["device"]]
    (held["mountpoint"] / "data").write_text("VM1 still writes\n")  # and can

    subprocess.run(["umount", str(held["mountpoint"])], check=True)  # VM1's guest is gone
    device = executor.ok("VM2", "attach", "db@DS1")["Device"]
    assert loops_on(held["extent"]) == [device]
    no_file_has_two_loops(tmp_path)
    assert read_data(device, guests / "vm2") == "VM1 still writes\n"
    info = executor.ok("VM2", "get", "db@DS1")
    assert (info["status"], info["attached to VM"], info["attached to this VM"]) == ("attached", "VM2", True)
    assert executor.ok("VM1", "get", "db@DS1")["attached to this VM"] is False  # VM1's plugin drops its mount
    events = [e for e in json.loads(admin.ok("report audit --output-format=json")) if e["action"] == "takeover"]
    assert [(e["vm"], e["target"], e["outcome"]) for e in events] == [("VM2", "db@DS1", "ok")]
    assert events[0]["detail"].startswith("volume db@DS1 taken over from VM VM1, silent ")
    assert events[0]["detail"].endswith(" s, by VM VM2")
    (row,) = parse_table(admin.ok("volume ls -c volume,attached-to,taken-over"))
    assert (row["Volume"], row["Attached-to"]) == ("db", "VM2")
    assert row["Taken Over"] == f"from VM VM1, {events[0]['at'][:10]} {events[0]['at'][11:19]}"
    assert "Taken Over" not in admin.ok("volume ls")

    # VM1 comes back: its refused mount's clean-up detaches nothing of VM2's,
    # and it cannot take the volume back from a VM that reports.
    executor.ok("VM1", "detach", "db@DS1")
    executor.ok("VM2", "report")
    assert executor.err("VM1", "attach", "db@DS1").startswith(
        "Failed to attach volume db@DS1: it is attached to VM VM2, whose plugin reported ")
    assert loops_on(held["extent"]) == [device]
    executor.ok("VM2", "detach", "db@DS1")
    executor.ok("VM2", "remove", "db@DS1")


def test_takeover_off_keeps_the_volume_with_its_vm(executor, admin, held):
    admin.ok("vmgroup update --name=_DEFAULT --takeover-after=off")
    assert parse_table(admin.ok("vmgroup ls"))[0]["Takeover_after"] == "off"
    executor.ok("VM1", "report")
    subprocess.run(["umount", str(held["mountpoint"])], check=True)
    time.sleep(TAKEOVER_AFTER + 0.5)
    assert executor.err("VM2", "attach", "db@DS1") == "Failed to attach volume db@DS1: it is attached to VM VM1"
    assert loops_on(held["extent"]) == [held["device"]]


def test_the_takeover_setting_is_checked(admin):
    assert parse_table(admin.ok("vmgroup ls"))[0]["Takeover_after"] == "30s"
    result = admin("vmgroup update --name=_DEFAULT --takeover-after=soon")
    assert result.exit_code == 2 and "Invalid duration 'soon'" in result.output
    result = admin("vmgroup update --name=_DEFAULT --takeover-after=0s")
    assert result.exit_code == 2 and "at least 1s, or off" in result.output
    admin.ok("vmgroup create --name=web --default-datastore=DS1 --takeover-after=2m")
    assert [r["Takeover_after"] for r in parse_table(admin.ok("vmgroup ls"))] == ["30s", "120s"]


def test_each_vms_last_report_is_shown_and_written_at_most_once_per_interval(executor, admin):
    from vmdkops_admin.db import modes
    from vmdkops_admin.executor import liveness

    def reported():
        with modes.reader() as query:
            return liveness.last_reports(query)

    rows = {r["Name"]: r["Last_report"] for r in parse_table(admin.ok("host vm ls"))}
    assert set(rows.values()) == {"never"}
    executor.ok("VM1", "report")
    first = reported()
    for _ in range(20):  # a guest that reports too often costs the DB nothing more
        executor.ok("VM1", "report")
    assert reported() == first and len(first) == 1
    rows = {r["Name"]: r["Last_report"] for r in parse_table(admin.ok("host vm ls"))}
    assert rows["VM1"].endswith("s ago") and rows["VM2"] == "never"
    time.sleep(liveness.WRITE_EVERY + 0.2)
    executor.ok("VM1", "report")
    (vm1, at), = first.items()
    assert reported()[vm1] > at
