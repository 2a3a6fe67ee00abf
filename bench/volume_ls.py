#!/usr/bin/env python3
"""``vmdkops_admin volume ls`` with 10,000 volumes (4 datastores, 50 vmgroups)
against the floor ``python3 -c 'import sqlalchemy.orm'``, in one run.

The volumes are real: a descriptor, a sparse extent and a side-car each, and
an index row in a SQLite config DB. Median of --runs (default 10) runs after
one warm-up, for the table and for JSON. Target: ratio < 1.5.

    .venv/bin/python bench/volume_ls.py [--volumes N] [--runs N]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime

from timing import median_seconds


def populate(home, volumes, datastores=4, vmgroups=50):
    os.environ["VMDKOPS_HOME"] = home
    from sqlalchemy import insert
    from sqlalchemy.orm import Session

    from vmdkops_admin import db
    from vmdkops_admin.admin.vmgroups import create
    from vmdkops_admin.backends import get_backend
    from vmdkops_admin.backends.local.vmdkfile import descriptor_text
    from vmdkops_admin.db import lifecycle
    from vmdkops_admin.db.models import Volume

    backend = get_backend()
    stores = []
    for d in range(datastores):
        path = os.path.join(home, f"ds{d}")
        os.makedirs(path)
        stores.append(backend.add_datastore(f"ds{d}", path))
    lifecycle.init(backend, local=True)
    engine = db.connect(db.sqlite_url(os.path.join(home, "auth-db")), "bench")
    with Session(engine) as session:
        groups = []
        for g in range(vmgroups):
            create(session, backend, f"group{g:02d}", stores[g % datastores])
        session.commit()
        from sqlalchemy import select
        from vmdkops_admin.db.models import VmGroup
        groups = list(session.execute(select(VmGroup.id, VmGroup.uuid, VmGroup.name)))
        rows = []
        now = datetime.utcnow()
        meta_opts = {"size": "100mb", "fstype": "ext4", "diskformat": "thin"}
        for i in range(volumes):
            gid, guuid, gname = groups[i % len(groups)]
            ds = stores[i % datastores]
            name = f"vol{i:05d}"
            folder = backend.vmgroup_dir(ds, guuid, gname, create=True)
            descriptor = os.path.join(folder, name + ".vmdk")
            with open(descriptor, "w") as f:
                f.write(descriptor_text(name + "-flat.vmdk", 100 << 20, "thin"))
            with open(os.path.join(folder, name + "-flat.vmdk"), "w") as f:
                f.truncate(100 << 20)
            with open(os.path.join(folder, name + ".vmfd"), "w") as f:
                json.dump({"status": "detached", "volOpts": meta_opts, "created": time.asctime(),
                           "created-by": "bench"}, f)
            rows.append({"vmgroup_id": gid, "datastore_url": ds.url, "name": name, "size_mb": 100,
                         "options": meta_opts, "state": "ready", "created": now, "created_by": "bench"})
        session.execute(insert(Volume), rows)
        session.commit()
    engine.dispose()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--volumes", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    admin = os.path.join(os.path.dirname(sys.executable), "vmdkops_admin")
    with tempfile.TemporaryDirectory() as home:
        populate(home, args.volumes)
        env = dict(os.environ, VMDKOPS_HOME=home)
        listed = subprocess.run([admin, "volume", "ls", "--output-format=json"], env=env,
                                capture_output=True, text=True, check=True)
        assert len(json.loads(listed.stdout)) == args.volumes
        floor = median_seconds([sys.executable, "-c", "import sqlalchemy.orm"], args.runs, env)
        print(f"median of {args.runs} runs; {args.volumes} volumes, 4 datastores, 50 vmgroups")
        print(f"{'floor: import sqlalchemy.orm':<40} {floor * 1000:7.1f} ms")
        for label, extra in (("volume ls (table)", []), ("volume ls --output-format=json",
                                                          ["--output-format=json"])):
            measured = median_seconds([admin, "volume", "ls", *extra], args.runs, env)
            print(f"{label:<40} {measured * 1000:7.1f} ms   ratio {measured / floor:.2f} "
                  "(target < 1.5)")


if __name__ == "__main__":
    sys.exit(main())
