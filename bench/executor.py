#!/usr/bin/env python3
"""Executor benchmarks on the local backend (run as root: attach uses loop devices).

1. Cycles per second of create -> attach -> detach -> remove through a real
   vmdk-opsd on its unix socket, with 1 and with 8 concurrent clients
   (SQLite config DB, 10 MB thin volumes).
2. Authorization latency (vmgroup lookup, privilege choice and the quota sum
   of a create) with 1,000 vmgroups, 10,000 VMs and 100,000 indexed volumes,
   p50 and p99 of --lookups (default 2,000) random VMs; on SQLite, and on
   PostgreSQL when --pg-url names an empty database.
   Targets: p99 < 2 ms (SQLite), < 5 ms (PostgreSQL).

    .venv/bin/python bench/executor.py [--cycles N] [--pg-url URL]
"""

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from repo import use_rig

use_rig()


def cycles(home, cycles_per_client):
    from rig.executor import Executor, release_loops
    from vmdkops_admin.backends import get_backend
    from vmdkops_admin.db import lifecycle

    os.environ["VMDKOPS_HOME"] = home
    backend = get_backend()
    lifecycle.init(backend, local=True)
    for i in range(8):
        backend.add_vm(f"bench-vm{i}")
    executor = Executor(home).start()
    try:
        def client(n):
            vm = f"bench-vm{n}"
            for c in range(cycles_per_client):
                name = f"v{n}-{c}"
                for cmd, opts in (("create", {"size": "10mb"}), ("attach", None), ("detach", None),
                                  ("remove", None)):
                    executor.ok(vm, cmd, name, opts)

        results = {}
        for clients in (1, 8):
            for n in range(clients):
                executor.token(f"bench-vm{n}")
            start = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(client, range(clients)))
            elapsed = time.perf_counter() - start
            results[clients] = clients * cycles_per_client / elapsed
        return results
    finally:
        executor.stop()
        release_loops(home)


def populate_index(url, vmgroups=1000, vms=10000, volumes=100000):
    from sqlalchemy import insert, select
    from sqlalchemy.orm import Session

    from vmdkops_admin import db
    from vmdkops_admin.db.lifecycle import _create_schema
    from vmdkops_admin.db.models import Privilege, Vm, VmGroup, Volume

    _create_schema(url)
    engine = db.connect(url, "bench")
    with Session(engine) as session:
        session.execute(insert(VmGroup), [
            {"uuid": str(uuid.uuid4()), "name": f"g{g:04d}", "description": "",
             "default_datastore_url": "_VM_DS://"} for g in range(vmgroups)])
        ids = list(session.scalars(select(VmGroup.id).where(VmGroup.name != "_DEFAULT")))
        session.execute(insert(Privilege), [
            {"vmgroup_id": gid, "datastore_url": url_, "allow_create": True,
             "max_volume_size": 10240, "usage_quota": 1024 * 1024}
            for gid in ids for url_ in ("_VM_DS://", "ds:///ds0/")])
        vm_rows = [{"uuid": str(uuid.uuid4()), "name": f"vm{v}", "vmgroup_id": ids[v % len(ids)]}
                   for v in range(vms)]
        session.execute(insert(Vm), vm_rows)
        for chunk in range(0, volumes, 10000):
            session.execute(insert(Volume), [
                {"vmgroup_id": ids[i % len(ids)], "datastore_url": f"ds:///ds{i % 4}/",
                 "name": f"vol{i}", "size_mb": 100, "options": {}, "state": "ready"}
                for i in range(chunk, chunk + 10000)])
        session.commit()
    return engine, [row["uuid"] for row in vm_rows]


def auth_latency(url, lookups):
    from sqlalchemy.orm import Session

    from vmdkops_admin.backends import VirtualMachine
    from vmdkops_admin.executor import authorize

    engine, vm_uuids = populate_index(url)
    times = []
    rng = random.Random(1)
    with Session(engine) as session:
        for _ in range(lookups):
            vm = VirtualMachine("bench", rng.choice(vm_uuids), "ds0")
            start = time.perf_counter()
            tenant = authorize.tenant_of(session, vm)
            rule = authorize.rule_for(tenant, "ds:///ds0/", "ds:///ds0/", short_name=True)
            authorize.check_create(rule, 100, authorize.used_mb(session, tenant, "ds:///ds0/"))
            session.commit()
            times.append(time.perf_counter() - start)
    engine.dispose()
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99)] * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=25, help="cycles per client")
    parser.add_argument("--lookups", type=int, default=2000)
    parser.add_argument("--pg-url", help="an empty PostgreSQL database for the latency run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        for clients, rate in cycles(home, args.cycles).items():
            print(f"create+attach+detach+remove, {clients} client(s): {rate:6.1f} cycles/s")
    with tempfile.TemporaryDirectory() as home:
        p50, p99 = auth_latency(f"sqlite:///{home}/auth.db", args.lookups)
        print(f"authorization, SQLite:     p50 {p50:.2f} ms  p99 {p99:.2f} ms (target p99 < 2 ms)")
    if args.pg_url:
        p50, p99 = auth_latency(args.pg_url, args.lookups)
        print(f"authorization, PostgreSQL: p50 {p50:.2f} ms  p99 {p99:.2f} ms (target p99 < 5 ms)")


if __name__ == "__main__":
    sys.exit(main())
