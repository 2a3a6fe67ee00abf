#!/usr/bin/env python3
"""``vmdk-opsd`` start-up (the reconcile before the first guest is served):
wall time from exec to its pid file, median of --runs (default 3), and on the
simulator the requests it made (counted by the simulator itself).

- vsphere backend, simulator as vCenter and as ESX: 100 and 1,000 volumes;
- local backend: 10,000 volumes (4 datastores, 50 vmgroups).

Target: round trips do not grow with the number of volumes.

    .venv/bin/python bench/startup.py [--runs N] [--mode vpx|esx|local]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from repo import use_rig

REPO = use_rig()

from rig import vcsim  # noqa: E402


def start_once(home, backend, url=None):
    """(seconds until the pid file, simulator requests or None) of one start."""
    pid_file = os.path.join(home, "run", "vmdk-opsd.pid")
    before = vcsim.requests_served(url) if url else None
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vmdkops_admin.executor.main", "--backend", backend],
                               cwd=REPO, env=dict(os.environ, VMDKOPS_HOME=home),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(pid_file):
        if process.poll() is not None:
            sys.exit(f"vmdk-opsd exited with {process.returncode}; see {home}/log")
        time.sleep(0.002)
    elapsed = time.perf_counter() - start
    requests = vcsim.requests_served(url) - before if url else None
    process.terminate()
    process.wait(timeout=60)
    return elapsed, requests


def measure(home, backend, runs, url=None):
    start_once(home, backend, url)  # the first start may index and warms the caches
    results = [start_once(home, backend, url) for _ in range(runs)]
    return statistics.median(r[0] for r in results) * 1000, results[-1][1]


def vsphere(mode, runs, binary, work):
    import vsphere as vsphere_bench

    process, url = vcsim.start(binary, mode)
    home = tempfile.mkdtemp(dir=work)
    os.environ["VMDKOPS_HOME"] = home
    try:
        vsphere_bench.settings_for(home, url)
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "vmdkops_admin"),
                        "config", "init", "--local"], check=True, stdout=subprocess.DEVNULL)
        made = 0
        for volumes in (100, 1000):
            vsphere_bench.populate(home, volumes - made, first=made)
            made = volumes
            ms, requests = measure(home, "vsphere", runs, url)
            print(f"  {volumes:6d} volumes: {ms:7.1f} ms, {requests} requests")
    finally:
        vcsim.stop(process)


def local(runs, volumes):
    import volume_ls

    with tempfile.TemporaryDirectory() as home:
        volume_ls.populate(home, volumes)
        ms, _ = measure(home, "local", runs)
        print(f"  {volumes:6d} volumes: {ms:7.1f} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mode", choices=("vpx", "esx", "local"), action="append")
    parser.add_argument("--local-volumes", type=int, default=10000)
    args = parser.parse_args()
    modes = args.mode or ["vpx", "esx", "local"]
    print(f"vmdk-opsd start-up, median of {args.runs}")
    if set(modes) & {"vpx", "esx"}:
        if not vcsim.available():
            sys.exit("needs go and govmomi (Debian packages golang-go and golang-github-vmware-govmomi-dev)")
        with tempfile.TemporaryDirectory() as work:
            binary = vcsim.build(work)
            for mode in ("vpx", "esx"):
                if mode in modes:
                    print(f"vcsim as {'vCenter' if mode == 'vpx' else 'ESX'}:")
                    vsphere(mode, args.runs, binary, work)
    if "local" in modes:
        print("local backend:")
        local(args.runs, args.local_volumes)


if __name__ == "__main__":
    sys.exit(main())
