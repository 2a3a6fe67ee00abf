#!/usr/bin/env python3
"""``vmdkops_admin volume resize`` on the local backend: the time to grow a
1 GB volume to 2 GB, thin and eagerzeroedthick (SQLite config DB; the
volume made by a real vmdk-opsd, resized by the command as a process), and
of the disk's part alone (``grow_disk``). Median of --runs (default 5).

    .venv/bin/python bench/resize.py [--runs N]
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from repo import use_rig

use_rig()


def measure(home, diskformat, runs):
    from rig.executor import Executor
    from vmdkops_admin.backends import get_backend
    from vmdkops_admin.db import lifecycle

    os.environ["VMDKOPS_HOME"] = home
    backend = get_backend()
    datastore = backend.add_datastore("bench", home)
    backend.add_vm("bench-vm", None, "bench")
    lifecycle.init(backend, local=True)
    admin = shutil.which("vmdkops_admin", path=os.path.dirname(sys.executable))
    executor = Executor(home).start()
    times, disk_times = [], []
    try:
        for run in range(runs):
            backend.vmgroup_dir(datastore, "alone", None, create=True)
            descriptor = backend.descriptor(datastore, "alone", f"alone-{run}")
            backend.create_disk(descriptor, 1024, diskformat)
            start = time.perf_counter()
            backend.grow_disk(descriptor, 2048, diskformat)
            disk_times.append(time.perf_counter() - start)
            backend.delete_disk(descriptor)
            name = f"{diskformat}-{run}"
            executor.ok("bench-vm", "create", name, {"size": "1gb", "diskformat": diskformat})
            start = time.perf_counter()
            subprocess.run([admin, "volume", "resize", f"--volume={name}@bench", "--size=2GB"],
                           check=True, capture_output=True)
            times.append(time.perf_counter() - start)
            executor.ok("bench-vm", "remove", name)
    finally:
        executor.stop()
    return statistics.median(times), statistics.median(disk_times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for diskformat in ("thin", "eagerzeroedthick"):
        home = tempfile.mkdtemp(prefix="vmdkops-bench-resize-")
        try:
            command, disk = measure(home, diskformat, args.runs)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        print(f"resize 1 GB -> 2 GB, {diskformat:<17} command {command * 1000:7.1f} ms, "
              f"disk {disk * 1000:7.1f} ms  (median of {args.runs})")


if __name__ == "__main__":
    main()
