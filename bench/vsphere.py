#!/usr/bin/env python3
"""The vsphere backend against the simulator (tests/vcsim), as a vCenter and as
a standalone ESX host.

1. Latency of connect, create (disk and side-car), attach, detach and delete
   (disk and side-car): median of --runs (default 20), with the vSphere API
   round trips of each.
2. ``vmdkops_admin volume ls`` with --volumes (default 1,000) indexed volumes:
   its wall time (median of 5 runs of the command) and its vSphere API round
   trips (counted in-process, from a new backend: the session included),
   against the same with a tenth of the volumes. Target: the count does not
   grow with the number of volumes, at most 3 per datastore beyond the fixed
   part (session, datastores, VMs).

Needs Debian's golang-go and golang-github-vmware-govmomi-dev (scripts/test.sh
installs them).

    .venv/bin/python bench/vsphere.py [--runs N] [--volumes N] [--mode vpx|esx]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

from repo import use_rig

REPO = use_rig()

from rig import vcsim  # noqa: E402


def settings_for(home, url):
    with open(os.path.join(home, "password"), "w") as f:
        f.write("pass\n")
    with open(os.path.join(home, "vsphere.json"), "w") as f:
        json.dump({"host": url.hostname, "port": url.port, "user": "user",
                   "password_file": os.path.join(home, "password"), "insecure": True}, f)


def timed(action, runs):
    """(median ms, round trips of one run) of ``action(i) -> backend``."""
    times, trips = [], []
    for i in range(runs):
        start = time.perf_counter()
        backend, before = action(i)
        times.append(time.perf_counter() - start)
        trips.append(backend.round_trips - before)
    return statistics.median(times) * 1000, statistics.median(trips)


def latencies(runs):
    from vmdkops_admin.backends import get_backend

    backend = get_backend()
    datastore = backend.datastores()[0]
    vm = sorted(backend.vms(), key=lambda v: v.name)[0]
    group = "33333333-4444-5555-6666-777777777777"
    backend.vmgroup_dir(datastore, group, "bench", create=True)
    disks = [backend.descriptor(datastore, group, f"lat{i}") for i in range(runs)]

    def connect(_):
        """Login and the service content: the SOAP calls before the backend
        counts its own are counted on pyVmomi's stub class."""
        from pyVmomi.SoapAdapter import SoapStubAdapter

        calls, invoke = [], SoapStubAdapter.InvokeMethod

        def counted(stub, *args, **kwargs):
            calls.append(1)
            return invoke(stub, *args, **kwargs)
        SoapStubAdapter.InvokeMethod = counted
        try:
            fresh = get_backend()
            fresh.content  # noqa: B018 - SmartConnect and the service content
        finally:
            SoapStubAdapter.InvokeMethod = invoke
        return fresh, fresh.round_trips - len(calls)

    def step(operation):
        def run(i):
            before = backend.round_trips
            operation(disks[i])
            return backend, before
        return run

    def create(descriptor):
        backend.create_disk(descriptor, 10, "thin")
        backend.write_metadata(descriptor, {"status": "detached", "volOpts": {}})

    results = [("connect (SOAP calls)", timed(connect, runs)),
               ("create (disk + side-car)", timed(step(create), runs)),
               ("attach", timed(step(lambda d: backend.attach(vm, d)), runs)),
               ("detach", timed(step(lambda d: backend.detach(vm, d)), runs)),
               ("delete (disk + side-car)", timed(step(backend.delete_disk), runs))]
    for label, (ms, trips) in results:
        print(f"  {label:<28} {ms:7.1f} ms   {trips:4.0f} round trips")


def populate(home, count, first=0):
    """``count`` volumes of the _DEFAULT vmgroup: disks, side-cars and index rows."""
    from sqlalchemy import insert, select
    from sqlalchemy.orm import Session

    from vmdkops_admin import db
    from vmdkops_admin.backends import get_backend
    from vmdkops_admin.db.models import Volume, VmGroup

    backend = get_backend()
    datastore = backend.datastores()[0]
    engine = db.connect(db.sqlite_url(os.path.join(home, "auth-db")), "bench")
    with Session(engine) as session:
        group_id, group_uuid = session.execute(
            select(VmGroup.id, VmGroup.uuid).where(VmGroup.name == "_DEFAULT")).one()
        backend.vmgroup_dir(datastore, group_uuid, "_DEFAULT", create=True)
        rows, opts = [], {"size": "10mb", "diskformat": "thin"}
        for i in range(first, first + count):
            name = f"vol{i:05d}"
            descriptor = backend.descriptor(datastore, group_uuid, name)
            backend.create_disk(descriptor, 10, "thin")
            backend.write_metadata(descriptor, {"status": "detached", "volOpts": opts,
                                                "created": time.asctime(), "created-by": "bench"})
            rows.append({"vmgroup_id": group_id, "datastore_url": datastore.url, "name": name,
                         "size_mb": 10, "options": opts, "state": "ready",
                         "created": datetime.utcnow(), "created_by": "bench"})
        session.execute(insert(Volume), rows)
        session.commit()
    engine.dispose()


def listing_round_trips():
    """(total, datastores) round trips of one ``volume ls`` listing from a new backend."""
    from vmdkops_admin.admin.volumes import list_volumes
    from vmdkops_admin.backends import get_backend
    from vmdkops_admin.db import modes

    backend = get_backend()
    with modes.reader() as query:
        records = list_volumes(query, backend)
    return backend.round_trips, len(backend.datastores()), len(records)


def volume_ls(home, volumes):
    admin = os.path.join(os.path.dirname(sys.executable), "vmdkops_admin")
    env = dict(os.environ, VMDKOPS_HOME=home)
    small = max(volumes // 10, 1)
    populate(home, small)
    trips_small, datastores, listed = listing_round_trips()
    assert listed == small, listed
    populate(home, volumes - small, first=small)
    trips, datastores, listed = listing_round_trips()
    assert listed == volumes, listed
    times = []
    for _ in range(6):
        start = time.perf_counter()
        subprocess.run([admin, "volume", "ls"], env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    print(f"  volume ls, {volumes} volumes: {statistics.median(times[1:]) * 1000:7.1f} ms (median of 5)")
    print(f"  round trips: {trips_small} with {small} volumes, {trips} with {volumes} "
          f"({datastores} datastore(s)); grows: {'yes' if trips > trips_small else 'no'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--volumes", type=int, default=1000)
    parser.add_argument("--mode", choices=("vpx", "esx"), action="append")
    args = parser.parse_args()
    if not vcsim.available():
        sys.exit("needs go and govmomi (Debian packages golang-go and golang-github-vmware-govmomi-dev)")
    with tempfile.TemporaryDirectory() as work:
        binary = vcsim.build(work)
        for mode in args.mode or ["vpx", "esx"]:
            process, url = vcsim.start(binary, mode)
            home = tempfile.mkdtemp(dir=work)
            os.environ["VMDKOPS_HOME"] = home
            try:
                settings_for(home, url)
                subprocess.run([os.path.join(os.path.dirname(sys.executable), "vmdkops_admin"),
                                "config", "init", "--local"], check=True, stdout=subprocess.DEVNULL)
                print(f"vcsim as {'vCenter' if mode == 'vpx' else 'ESX'}: median of {args.runs}")
                latencies(args.runs)
                volume_ls(home, args.volumes)
            finally:
                vcsim.stop(process)


if __name__ == "__main__":
    sys.exit(main())
