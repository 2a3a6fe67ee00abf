#!/usr/bin/env python3
"""The vsphere driver against Docker's built-in local driver, on the same
private dockerd, in one run (as root; needs dockerd, busybox and loop devices):

    docker volume inspect                                  target ratio <= 1.3
    docker volume create + docker volume rm               target ratio <= 3 (includes mkfs)
    docker run --rm -v vol:/data local/busybox true       target ratio <= 2

Median of --runs (default 10) runs of each. With --managed, the plugin
built as a managed plugin (scripts/build-plugin.sh), pushed to a private
registry and installed from it runs beside the legacy one on the same
dockerd and is measured too; the build, push and install times of both
managed plugins (vsphere, vfile) are printed.

    .venv/bin/python bench/docker.py [--runs N] [--managed]
"""

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time

from repo import use_rig

REPO = use_rig()


def median(fn, runs):
    fn(0)
    times = []
    for i in range(1, runs + 1):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def install_managed(host, executor, home):
    """Build both managed plugins on the host's dockerd, push them to a
    private registry, remove them, and install them from there as users do
    (vsphere enabled with the host's executor and credential; vfile, which
    needs a swarm, disabled); the vsphere plugin's name."""
    import subprocess

    from rig.docker import Registry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    registry = Registry(home, f"127.0.0.1:{port}").wait()
    try:
        for driver in ("vfile", "vsphere"):
            reference = f"{registry.address}/{driver}:bench"
            start = time.perf_counter()
            built = subprocess.run([os.path.join(REPO, "scripts", "build-plugin.sh"), "--driver", driver, "--tag",
                                    reference, "--push"], check=True, capture_output=True, text=True,
                                   env=dict(os.environ, DOCKER_HOST=f"unix://{host.socket}"))
            print(f"{driver} managed plugin: {built.stdout.splitlines()[0]}; built and pushed in "
                  f"{time.perf_counter() - start:.1f} s")
            host.docker("plugin", "rm", "-f", reference)
            if driver == "vfile":
                start = time.perf_counter()
                host.docker("plugin", "install", "--grant-all-permissions", "--disable", reference)
                print(f"vfile managed plugin: installed (pulled, not enabled) in {time.perf_counter() - start:.2f} s")
                host.docker("plugin", "rm", "-f", reference)
                continue
            credential = executor.write_credential("bench-host", os.path.join(home, "managed.credential"))
            os.makedirs(os.path.join(home, "etc"), exist_ok=True)
            start = time.perf_counter()
            host.docker("plugin", "install", "--grant-all-permissions", reference,
                        f"executor.source={os.path.dirname(executor.socket)}", f"credential.source={credential}",
                        f"config.source={os.path.join(home, 'etc')}", f"log.source={home}",
                        f"docker.source={host.socket}")
            print(f"vsphere managed plugin: installed and enabled in {time.perf_counter() - start:.2f} s")
    finally:
        registry.stop()
    return reference


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--managed", action="store_true", help="also the managed (v2) plugin")
    args = parser.parse_args()

    from rig.docker import DockerHost
    from rig.executor import Executor, release_loops
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
            drivers = {"local": "local", "vsphere": host.driver}
            if args.managed:
                drivers["managed"] = install_managed(host, executor, home)
            results = []
            for label, target in (("volume inspect", 1.3), ("volume create + rm", 3),
                                  ("run --rm -v vol:/data true", 2)):
                timings = {}
                for kind, driver in drivers.items():
                    prefix = f"b{kind[0]}"
                    host.docker("volume", "create", "-d", driver, f"{prefix}-fixed")
                    if label == "volume inspect":
                        fn = lambda i, p=prefix: host.docker("volume", "inspect", f"{p}-fixed")  # noqa: E731
                    elif label == "volume create + rm":
                        def fn(i, d=driver, p=prefix):
                            host.docker("volume", "create", "-d", d, f"{p}-cr{i}")
                            host.docker("volume", "rm", f"{p}-cr{i}")
                    else:
                        fn = lambda i, p=prefix: host.run(["-v", f"{p}-fixed:/data"], "true")  # noqa: E731
                    timings[kind] = median(fn, args.runs)
                    host.docker("volume", "rm", f"{prefix}-fixed")
                results.append((label, timings, target))
            print(f"median of {args.runs} runs each, same dockerd")
            for label, timings, target in results:
                line = f"{label:<28} local {timings['local'] * 1000:7.1f} ms   vsphere {timings['vsphere'] * 1000:7.1f} ms"
                line += f"   ratio {timings['vsphere'] / timings['local']:.2f} (target <= {target})"
                if "managed" in timings:
                    line += (f"   managed {timings['managed'] * 1000:7.1f} ms: to local "
                             f"{timings['managed'] / timings['local']:.2f}, to legacy "
                             f"{timings['managed'] / timings['vsphere']:.2f}")
                print(line)
        finally:
            host.stop()
            executor.stop()
            release_loops(home)


if __name__ == "__main__":
    sys.exit(main())
