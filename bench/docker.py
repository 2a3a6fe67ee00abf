#!/usr/bin/env python3
"""The vsphere driver against Docker's built-in local driver, on the same
private dockerd, in one run (as root; needs dockerd, busybox and loop devices):

    docker volume inspect                                  target ratio <= 1.3
    docker volume create + docker volume rm               target ratio <= 3 (includes mkfs)
    docker run --rm -v vol:/data local/busybox true       target ratio <= 2

Median of --runs (default 10) runs of each.

    .venv/bin/python bench/docker.py [--runs N]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def median(fn, runs):
    fn(0)
    times = []
    for i in range(1, runs + 1):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    from docker_env import DockerHost
    from executor import Executor, release_loops
    from vmdkops_admin.backends import get_backend

    with tempfile.TemporaryDirectory() as home, tempfile.TemporaryDirectory() as images:
        os.environ["VMDKOPS_HOME"] = home
        backend = get_backend()
        backend.add_vm("bench-host")
        executor = Executor(home).start()
        host = DockerHost(executor, "bench-host")
        try:
            host.start_dockerd()
            host.import_busybox(images)
            host.start_plugin()
            results = []
            for label, target in (("volume inspect", 1.3), ("volume create + rm", 3),
                                  ("run --rm -v vol:/data true", 2)):
                timings = {}
                for driver in ("local", host.driver):
                    prefix = "bl" if driver == "local" else "bv"
                    host.docker("volume", "create", "-d", driver, f"{prefix}-fixed")
                    if label == "volume inspect":
                        fn = lambda i, p=prefix: host.docker("volume", "inspect", f"{p}-fixed")  # noqa: E731
                    elif label == "volume create + rm":
                        def fn(i, d=driver, p=prefix):
                            host.docker("volume", "create", "-d", d, f"{p}-cr{i}")
                            host.docker("volume", "rm", f"{p}-cr{i}")
                    else:
                        fn = lambda i, p=prefix: host.run(["-v", f"{p}-fixed:/data"], "true")  # noqa: E731
                    timings[driver] = median(fn, args.runs)
                    host.docker("volume", "rm", f"{prefix}-fixed")
                ratio = timings[host.driver] / timings["local"]
                results.append((label, timings["local"], timings[host.driver], ratio, target))
            print(f"median of {args.runs} runs each, same dockerd")
            for label, local, vsphere, ratio, target in results:
                print(f"{label:<28} local {local * 1000:7.1f} ms   vsphere {vsphere * 1000:7.1f} ms   "
                      f"ratio {ratio:.2f} (target <= {target})")
        finally:
            host.stop()
            executor.stop()
            release_loops(home)


if __name__ == "__main__":
    sys.exit(main())
