"""Reports for cron and monitoring: ``report usage`` in every format, with a
threshold and an atomic output file; ``report history`` from recorded
snapshots; the audit trail; cron's environment and overlapping runs."""

import json
import os
import subprocess
import sys
import threading

import pytest

from conftest import parse_table

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def usage_setup(admin, executor):
    """dev (VM1): 100 MB + 200 MB on DS1 (one attached) of a 1 GB quota;
    _DEFAULT (VM2): 50 MB on DS2, unlimited."""
    admin.ok("vmgroup create --name=dev --default-datastore=DS1 --vm-list=VM1")
    admin.ok("vmgroup access set --name=dev --datastore=DS1 --volume-maxsize=500MB --volume-totalsize=1GB")
    executor.ok("VM1", "create", "a", {"size": "100mb"})
    executor.ok("VM1", "create", "b", {"size": "200mb"})
    executor.ok("VM1", "attach", "a")
    executor.ok("VM2", "create", "c", {"size": "50mb"})
    yield
    executor.ok("VM1", "detach", "a")


TABLE = """\
VMGroup   Datastore  Volumes  Attached  Provisioned  Allocated  Max_volume_size  Total_size  Used
--------  ---------  -------  --------  -----------  ---------  ---------------  ----------  -----
_DEFAULT  DS2        1        0         50.00MB      0B         Unset            Unset       Unset
dev       DS1        2        1         300.00MB     0B         500.00MB         1.00GB      29.3%
"""


def test_usage_table_and_csv(admin, usage_setup):
    assert admin.ok("report usage") == TABLE
    assert admin.ok("report usage --output-format=csv") == (
        "vmgroup,datastore,volumes,attached,provisioned_mb,allocated_mb,max_volume_size,total_size,used_pct\n"
        "_DEFAULT,DS2,1,0,50,0,,,\n"
        "dev,DS1,2,1,300,0,500,1024,29.3\n")


def test_usage_json_and_filters(admin, usage_setup):
    records = json.loads(admin.ok("report usage --output-format=json --vmgroup=dev"))
    assert records == [{"vmgroup": "dev", "datastore": "DS1", "volumes": 2, "attached": 1,
                        "provisioned_mb": 300, "allocated_mb": 0, "max_volume_size": 500,
                        "total_size": 1024, "used_pct": 29.3}]
    assert json.loads(admin.ok("report usage --output-format=json --datastore=DS2"))[0]["vmgroup"] == "_DEFAULT"
    assert "<structure typeName=\"vdvs\">" in admin.ok("report usage --output-format=xml")


def test_usage_prometheus_parses(admin, usage_setup, tmp_path):
    from prometheus_client.parser import text_string_to_metric_families

    (tmp_path / "textfile").mkdir()
    out = tmp_path / "textfile" / "vmdkops.prom"
    result = admin("report", "usage", "--output-format=prometheus", "--output", str(out))
    assert (result.exit_code, result.stdout) == (0, "")
    assert os.listdir(tmp_path / "textfile") == ["vmdkops.prom"]  # no temporary file left behind
    samples = {}
    for family in text_string_to_metric_families(out.read_text()):
        assert family.type == "gauge" and family.documentation
        for sample in family.samples:
            samples[(sample.name, sample.labels["vmgroup"], sample.labels["datastore"])] = sample.value
    assert samples[("vmdkops_volumes", "dev", "DS1")] == 2
    assert samples[("vmdkops_attached_volumes", "dev", "DS1")] == 1
    assert samples[("vmdkops_provisioned_megabytes", "_DEFAULT", "DS2")] == 50
    assert samples[("vmdkops_quota_megabytes", "dev", "DS1")] == 1024
    assert samples[("vmdkops_quota_used_ratio", "dev", "DS1")] == pytest.approx(0.293)
    assert ("vmdkops_quota_megabytes", "_DEFAULT", "DS2") not in samples  # unlimited


def test_threshold_alerts_with_exit_code_4(admin, usage_setup):
    result = admin("report usage --threshold 25")
    assert result.exit_code == 4
    assert result.stderr == ("vmdkops: vmgroup dev uses 29.3% of its 1.00GB quota on datastore DS1 "
                             "(threshold 25%)\n")
    assert parse_table(result.stdout)[1]["VMGroup"] == "dev"
    assert admin("report usage --threshold 50").exit_code == 0


def test_history(admin, usage_setup, executor):
    from sqlalchemy import text

    from vmdkops_admin.db import modes

    admin.ok("report usage --record")
    executor.ok("VM1", "create", "d", {"size": "300mb"})
    admin.ok("report usage --record --keep 90d")
    engine = modes.connect(modes.detect())
    with engine.begin() as connection:  # two days pass, as far as the snapshots know
        connection.execute(text("UPDATE usage_snapshots SET taken = taken - INTERVAL '2 days' WHERE id <= 2")
                           if engine.dialect.name == "postgresql" else
                           text("UPDATE usage_snapshots SET taken = datetime(taken, '-2 days') WHERE id <= 2"))
        connection.execute(text("INSERT INTO usage_snapshots (taken, vmgroup, datastore, volumes, attached, "
                                "provisioned_mb) VALUES ('2001-01-01 00:00:00', 'dev', 'DS1', 1, 0, 1)"))
    engine.dispose()
    rows = {(r["vmgroup"], r["datastore"]): r for r in json.loads(
        admin.ok("report history --since 30d --output-format=json"))}
    dev = rows[("dev", "DS1")]
    assert (dev["snapshots"], dev["first_provisioned_mb"], dev["last_provisioned_mb"], dev["change_mb"]) == (
        2, 300, 600, 300)
    assert dev["change_per_day_mb"] == pytest.approx(150, rel=0.01)
    assert [r["VMGroup"] for r in parse_table(admin.ok("report history --vmgroup=dev"))] == ["dev"]
    assert len(json.loads(admin.ok("report history --output-format=json"))) == 2
    admin.ok("report usage --record --keep 90d")  # the 2001 snapshot goes
    assert json.loads(admin.ok("report history --vmgroup=dev --output-format=json"))[0]["first"] > "2001"
    assert admin("report history --since=soon").exit_code == 2


def test_audit_trail(admin, executor, usage_setup):
    admin.err("vmgroup create --name=dev --default-datastore=DS1")
    executor.err("VM1", "create", "huge", {"size": "600mb"})
    executor.ok("VM1", "create", "e", {"clone-from": "b"})
    events = json.loads(admin.ok("report audit --output-format=json"))
    actions = [(e["source"], e["action"], e["outcome"]) for e in events]
    assert ("admin", "vmgroup create", "ok") in actions
    assert ("admin", "vmgroup access set", "ok") in actions
    assert ("admin", "vmgroup create", "failed") in actions
    assert ("executor", "create", "failed") in actions and ("executor", "clone", "ok") in actions
    failed = json.loads(admin.ok("report audit --failed --output-format=json"))
    assert {e["error"] for e in failed} == {"Vmgroup dev already exists",
                                            "Volume size exceeds the max volume size limit"}
    vm1 = json.loads(admin.ok("report audit --vm VM1 --output-format=json"))
    assert {e["actor"] for e in vm1} == {"vm:VM1"} and {e["vmgroup"] for e in vm1} == {"dev"}
    assert all(e["vmgroup"] == "dev" for e in json.loads(
        admin.ok("report audit --vmgroup dev --output-format=json")))
    assert parse_table(admin.ok("report audit --since 1h"))[0]["Source"] == "admin"


def test_audit_failures_never_fail_the_operation(admin, executor, home):
    from sqlalchemy import text

    from vmdkops_admin.db import modes

    engine = modes.connect(modes.detect())
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE audit_events"))
    engine.dispose()
    created = admin.proc("vmgroup", "create", "--name=vg1", "--default-datastore=DS1")
    assert (created.returncode, created.stdout.split(".")[0]) == (0, "vmgroup 'vg1' is created")
    executor.ok("VM1", "create", "still-works")
    log = (home / "log" / "vmdk_ops.log").read_text()
    assert log.count("audit record lost") >= 2


def run_as_cron(home, *args):
    script = os.path.join(os.path.dirname(sys.executable), "vmdkops_admin")
    return subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", f"VMDKOPS_HOME={home}", script, *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def test_reports_run_in_crons_environment(admin, usage_setup, home, tmp_path):
    (tmp_path / "out").mkdir()
    for args in (["report", "usage", "--output-format", "prometheus", "--output", str(tmp_path / "out/u.prom")],
                 ["report", "usage", "--record", "--keep", "90d"], ["report", "history"],
                 ["report", "audit", "--since", "1d"]):
        result = run_as_cron(home, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stderr == ""
    assert "vmdkops_volumes" in (tmp_path / "out/u.prom").read_text()


def test_two_overlapping_runs(admin, usage_setup, home, tmp_path):
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "u.prom"
    results = []

    def run():
        results.append(run_as_cron(home, "report", "usage", "--record", "--output-format", "prometheus",
                                   "--output", str(target)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert target.read_text().count("vmdkops_volumes{") == 2
    assert sorted(os.listdir(tmp_path / "out")) == ["u.prom"]
    assert json.loads(admin.ok("report history --output-format=json"))[0]["snapshots"] == 2


def test_the_executor_serves_while_a_report_runs(admin, executor, inventory):
    """A report over 10,000 indexed volumes holds no lock that stops the executor."""
    from sqlalchemy import insert, select

    from vmdkops_admin.db import modes
    from vmdkops_admin.db.models import Volume, VmGroup

    engine = modes.connect(modes.detect())
    with engine.begin() as connection:
        group = connection.execute(select(VmGroup.id).where(VmGroup.name == "_DEFAULT")).scalar()
        url = inventory.datastore_by_name("DS2").url
        connection.execute(insert(Volume), [
            {"vmgroup_id": group, "datastore_url": url, "name": f"bulk{i}", "size_mb": 1,
             "options": {}, "state": "ready"} for i in range(10000)])
    engine.dispose()
    done = threading.Event()
    reports = []

    def report_loop():
        while not done.is_set():
            reports.append(admin.proc("report", "usage", "--output-format", "json").returncode)

    thread = threading.Thread(target=report_loop)
    thread.start()
    try:
        for i in range(10):
            executor.ok("VM1", "create", f"during{i}", {"size": "1mb"})
            executor.ok("VM1", "remove", f"during{i}")
    finally:
        done.set()
        thread.join()
    assert reports and set(reports) == {0}
