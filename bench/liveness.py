#!/usr/bin/env python3
"""The auth DB's load from liveness reports: --vms VMs (default 1,000) whose
plugins report every 5 s, written by the executor's own code
(``liveness.write``: one UPDATE per report) from --executors executors
(each with its own connection pool), to a private PostgreSQL server with
its default durability (fsync and synchronous commit on). Prints the writes
per second sustained, their latency (p50, p99), the CPU PostgreSQL spent
(share of one core) and the WAL it wrote. As root (initdb runs as postgres).

    .venv/bin/python bench/liveness.py [--vms 1000] [--seconds 60] [--executors 10]
"""

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A private cluster with PostgreSQL's default durability."""

    def __init__(self, base):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            sys.exit("PostgreSQL server missing (Debian package postgresql; scripts/test.sh installs it)")
        self.bindir, self.base = os.path.dirname(found[-1]), base
        self.data, self.port = os.path.join(base, "data"), free_port()
        shutil.chown(base, "postgres", "postgres")
        self.as_user = ["runuser", "-u", "postgres", "--"]

    def start(self):
        subprocess.run(self.as_user + [f"{self.bindir}/initdb", "-D", self.data, "-A", "trust", "-U",
                                       "postgres"], check=True, capture_output=True)
        subprocess.run(self.as_user + [f"{self.bindir}/pg_ctl", "-D", self.data, "-o",
                                       f"-k {self.base} -p {self.port} -c listen_addresses=127.0.0.1",
                                       "-l", os.path.join(self.base, "log"), "-w", "start"],
                       check=True, capture_output=True)
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def stop(self):
        subprocess.run(self.as_user + [f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"],
                       capture_output=True)

    def cpu_seconds(self):
        """CPU time of the postmaster and its children so far."""
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(stat.split("/")[2]), int(fields[1])
            if postmaster in (pid, ppid):
                total += (int(fields[11]) + int(fields[12])) / ticks
        return total


def wal_position(url):
    import psycopg

    with psycopg.connect(url + "/bench", autocommit=True) as conn:
        return conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]


def wal_bytes(url, start, end):
    import psycopg

    with psycopg.connect(url + "/bench", autocommit=True) as conn:
        return int(conn.execute("SELECT pg_wal_lsn_diff(%s, %s)", (end, start)).fetchone()[0])


def executor(engine, vms, interval, until, latencies, lock):
    """One executor's writes: each of its VMs reports every ``interval``
    seconds, their phases spread over the interval."""
    from vmdkops_admin.executor import liveness

    due = [(time.monotonic() + interval * i / len(vms), vm) for i, vm in enumerate(vms)]
    mine = []
    while True:
        due.sort()
        at, (vm_uuid, vm_name) = due[0]
        if at > until:
            break
        time.sleep(max(0.0, at - time.monotonic()))
        started = time.perf_counter()
        liveness.write(engine, vm_uuid, vm_name, liveness.utcnow())
        mine.append(time.perf_counter() - started)
        due[0] = (at + interval, (vm_uuid, vm_name))
    with lock:
        latencies.extend(mine)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--executors", type=int, default=10)
    args = parser.parse_args()
    import psycopg

    from vmdkops_admin import db
    from vmdkops_admin.executor import liveness

    with tempfile.TemporaryDirectory() as base:
        server = Postgres(base)
        url = server.start()
        try:
            with psycopg.connect(url + "/postgres", autocommit=True) as conn:
                conn.execute("CREATE DATABASE bench")
            home = os.path.join(base, "home")
            os.makedirs(home)
            admin = os.path.join(os.path.dirname(sys.executable), "vmdkops_admin")
            subprocess.run([admin, "config", "init", "--db-url", url + "/bench"], check=True,
                           capture_output=True, env=dict(os.environ, VMDKOPS_HOME=home))
            vms = [(f"00000000-0000-4000-8000-{i:012d}", f"vm{i}") for i in range(args.vms)]
            engines = [db.create_engine(url + "/bench") for _ in range(args.executors)]
            for vm_uuid, vm_name in vms:  # every VM has reported once: the steady state is UPDATEs
                liveness.write(engines[0], vm_uuid, vm_name, liveness.utcnow())
            latencies, lock = [], threading.Lock()
            cpu, wal, started = server.cpu_seconds(), wal_position(url), time.monotonic()
            until = started + args.seconds
            threads = [threading.Thread(target=executor, args=(
                engines[i], vms[i::args.executors], liveness.REPORT_INTERVAL, until, latencies, lock))
                for i in range(args.executors)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            cpu = server.cpu_seconds() - cpu
            written = wal_bytes(url, wal, wal_position(url))
            for engine in engines:
                engine.dispose()
        finally:
            server.stop()
    latencies.sort()
    print(f"{args.vms} VMs reporting every {liveness.REPORT_INTERVAL} s through {args.executors} executors, "
          f"{elapsed:.0f} s, PostgreSQL with fsync on")
    print(f"writes: {len(latencies)} ({len(latencies) / elapsed:.1f}/s; "
          f"expected {args.vms / liveness.REPORT_INTERVAL:.1f}/s)")
    print(f"write latency: p50 {latencies[len(latencies) // 2] * 1000:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms")
    print(f"PostgreSQL CPU: {cpu:.1f} s in {elapsed:.0f} s ({100 * cpu / elapsed:.1f}% of one core)")
    print(f"WAL written: {written / elapsed / 1024:.0f} KiB/s")


if __name__ == "__main__":
    main()
