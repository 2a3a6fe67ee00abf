#!/usr/bin/env python3
"""``vmdkops_admin report usage`` with 10,000 volumes (4 datastores, 50
vmgroups, real disk files) against the floor ``python3 -c 'import sqlalchemy.orm'``,
in one run; median of --runs (default 10). Target: ratio <= 1.5. Then the
executor's create+remove latency (p50, p99 of 40) alone and while reports run
back to back (as root: the executor's disks are real).

    .venv/bin/python bench/report.py [--runs N]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from repo import use_rig
from timing import median_seconds
from volume_ls import populate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    admin = os.path.join(os.path.dirname(sys.executable), "vmdkops_admin")
    with tempfile.TemporaryDirectory() as home:
        populate(home, 10000)
        env = dict(os.environ, VMDKOPS_HOME=home)
        out = subprocess.run([admin, "report", "usage", "--output-format=json"], env=env,
                             capture_output=True, text=True, check=True).stdout
        assert sum(r["volumes"] for r in json.loads(out)) == 10000
        floor = median_seconds([sys.executable, "-c", "import sqlalchemy.orm"], args.runs, env)
        print(f"median of {args.runs} runs; 10000 volumes, 4 datastores, 50 vmgroups")
        print(f"{'floor: import sqlalchemy.orm':<44} {floor * 1000:7.1f} ms")
        for label, extra in (("report usage (table)", []),
                             ("report usage --output-format=prometheus", ["--output-format=prometheus"])):
            measured = median_seconds([admin, "report", "usage", *extra], args.runs, env)
            print(f"{label:<44} {measured * 1000:7.1f} ms   ratio {measured / floor:.2f} (target <= 1.5)")
        executor_latency(home, admin, env)


def executor_latency(home, admin, env):
    use_rig()
    from rig.executor import Executor, release_loops
    from vmdkops_admin.backends import get_backend

    get_backend().add_vm("bench-vm", datastore="ds0")
    executor = Executor(home).start()
    try:
        def cycles(tag):
            times = []
            for i in range(40):
                start = time.perf_counter()
                executor.ok("bench-vm", "create", f"{tag}{i}", {"size": "1mb"})
                executor.ok("bench-vm", "remove", f"{tag}{i}")
                times.append(time.perf_counter() - start)
            times.sort()
            return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000

        alone = cycles("alone")
        done = threading.Event()
        reports = []

        def report_loop():
            while not done.is_set():
                subprocess.run([admin, "report", "usage"], env=env, stdout=subprocess.DEVNULL, check=True)
                reports.append(1)

        thread = threading.Thread(target=report_loop)
        thread.start()
        try:
            during = cycles("during")
        finally:
            done.set()
            thread.join()
        print(f"executor create+remove alone:              p50 {alone[0]:6.1f} ms  p99 {alone[1]:6.1f} ms")
        print(f"executor create+remove during {len(reports):3d} reports: p50 {during[0]:6.1f} ms  "
              f"p99 {during[1]:6.1f} ms")
    finally:
        executor.stop()
        release_loops(home)


if __name__ == "__main__":
    sys.exit(main())
