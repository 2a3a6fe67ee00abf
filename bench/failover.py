#!/usr/bin/env python3
"""When a Docker host dies, with no one acting: on the test swarm of three
managers and a worker (tests/rig/swarm.py, local backend), the worker runs
the workload and is killed (its link down, all its processes killed); the
time from its death to the first write that succeeds again, median of
--runs:

1. a one-replica service writing a counter to a vsphere volume: swarm
   reschedules the task, whose Mount takes the volume over from the dead
   VM (its plugin silent for the vmgroup's takeover-after, default 30 s,
   and no mount left on its device); the first write of the new task;
2. a shared volume whose file server ran on the dead node, written by a
   container on another node: the server's task is rescheduled and takes
   its base volume over the same way; the client's first write after.

Target: <= 60 s each (the original: never; vSphere CSI: 6 minutes). Run as root.

    .venv/bin/python bench/failover.py [--runs N]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from repo import use_rig

REPO = use_rig()

from rig.swarm import build_samba_image, start_swarm, stop_swarm  # noqa: E402

COUNTER = ('i=$(cat /data/n 2>/dev/null || echo 0); while true; do i=$((i+1)); '
           'if echo $i > /data/t && sync && mv /data/t /data/n && sync; then echo "ok $i"; fi; sleep 0.1; done')
TIMEOUT = 300


def wait(predicate, timeout=TIMEOUT, interval=0.1):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {timeout} s")
        time.sleep(interval)


def on_the_worker(swarm, make):
    """Run ``make()`` while the managers are drained: what it starts runs on the worker."""
    from test_vfile_resilience import node_id

    manager = swarm.nodes[0]
    others = [node_id(n) for n in swarm.nodes[:3]]
    for other in others:
        manager.docker("node", "update", "--availability", "drain", other)
    try:
        return make()
    finally:
        for other in others:
            manager.docker("node", "update", "--availability", "active", other)


def service_failover(swarm, run):
    """Seconds from the death of the node running a counter service to the first write of its new task."""
    from test_vfile_resilience import task_node

    manager, victim = swarm.nodes[0], swarm.nodes[3]
    volume, service = f"benchdb{run}x{os.getpid()}", f"benchsvc{run}x{os.getpid()}"
    image = manager.docker("image", "inspect", "-f", "{{.Id}}", "local/busybox").stdout.strip()

    def create():
        manager.docker("service", "create", "-d", "--name", service, "--no-resolve-image", "--mount",
                       f"type=volume,source={volume},destination=/data,volume-driver=vsphere",
                       image, "sh", "-c", COUNTER)
        wait(lambda: task_node(swarm, service) is victim)

    on_the_worker(swarm, create)
    container = victim.docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name={service}").stdout.strip()
    wait(lambda: "ok 5" in victim.docker("logs", container).stdout)
    victim.kill()
    died = time.monotonic()

    def written_again():
        node = task_node(swarm, service)
        if node in (None, victim):
            return False
        moved = node.docker("ps", "-q", "-f", f"label=com.docker.swarm.service.name={service}").stdout.strip()
        return bool(moved) and "ok " in node.docker("logs", moved, check=False).stdout

    wait(written_again, interval=0.2)
    seconds = time.monotonic() - died
    victim.revive()
    manager.docker("service", "rm", service)
    wait(lambda: manager.docker("volume", "rm", volume, check=False).returncode == 0, 120, 1)
    return seconds


def server_failover(swarm, run):
    """Seconds from the death of a file server's node to a client's next successful write."""
    from test_vfile import start
    from test_vfile_resilience import server_node

    manager, writer_node, victim = swarm.nodes[0], swarm.nodes[1], swarm.nodes[3]
    volume = f"benchfo{run}x{os.getpid()}"
    manager.docker("volume", "create", "-d", "vfile", volume)
    writer = on_the_worker(swarm, lambda: start(writer_node, volume, COUNTER))
    assert server_node(swarm, volume) is victim
    time.sleep(1)
    victim.kill()
    died = time.monotonic()
    written = len(writer_node.docker("logs", writer).stdout.split("\n"))
    wait(lambda: len(writer_node.docker("logs", writer).stdout.split("\n")) > written + 1)
    seconds = time.monotonic() - died
    victim.revive()
    writer_node.docker("rm", "-f", writer)
    wait(lambda: manager.docker("volume", "rm", volume, check=False).returncode == 0, 120, 1)
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir="/tmp") as work:
        samba = build_samba_image(os.path.join(work, "vfile-smb.tar"))
        busybox = os.path.join(work, "busybox")
        os.makedirs(busybox)
        swarm = start_swarm(os.path.join(work, "swarm4"), samba, busybox, vms=("VM1", "VM2", "VM3", "VM4"),
                            managers=3)
        try:
            print(f"three managers and a worker, the worker killed; takeover-after 30 s; median of {args.runs}")
            for label, measure in (("vsphere volume of a service (death -> new task's first write)",
                                    service_failover),
                                   ("shared volume (death of its server's node -> client's next write)",
                                    server_failover)):
                times = [measure(swarm, run) for run in range(args.runs)]
                print(f"{label}: {statistics.median(times):5.1f} s "
                      f"(runs: {', '.join(f'{t:.1f}' for t in times)}; target <= 60)")
        finally:
            stop_swarm(swarm)


if __name__ == "__main__":
    sys.exit(main())
