#!/usr/bin/env python3
"""Start-up cost of vmdkops_admin against its floors, measured in one run.

    vmdkops_admin --help              vs  python3 -c 'import click'
    vmdkops_admin vmgroup ls          vs  python3 -c 'import sqlalchemy.orm'
      (SQLite, 100 vmgroups and 1,000 VMs)

Each command runs --runs times (default 15) after one warm-up; the medians and
their ratios are printed; a command's runs alternate with its floor's. Targets:
--help <= 1.1, vmgroup ls <= 1.5. Exit code 1 when a target is missed (with
--check).

    .venv/bin/python bench/cli_startup.py [--runs N] [--check]
"""

import argparse
import os
import sys
import tempfile

from timing import paired_medians

VMGROUPS, VMS = 100, 1000


def populate(home):
    """A SQLite config DB with VMGROUPS vmgroups of VMS / VMGROUPS VMs each."""
    os.environ["VMDKOPS_HOME"] = home
    from sqlalchemy.orm import Session

    from vmdkops_admin import db
    from vmdkops_admin.admin.vmgroups import create
    from vmdkops_admin.backends import VM_DS, get_backend, pseudo_datastore
    from vmdkops_admin.db import lifecycle

    backend = get_backend()
    for i in range(VMS):
        backend.add_vm(f"vm-{i:04d}")
    lifecycle.init(backend, local=True)
    engine = db.connect(db.sqlite_url(os.path.join(home, "auth-db")), "bench")
    per_group = VMS // VMGROUPS
    with Session(engine) as session:
        for g in range(VMGROUPS):
            names = [f"vm-{i:04d}" for i in range(g * per_group, (g + 1) * per_group)]
            create(session, backend, f"group-{g:03d}", pseudo_datastore(VM_DS), f"vmgroup number {g}", names)
        session.commit()
    engine.dispose()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()

    admin = os.path.join(os.path.dirname(sys.executable), "vmdkops_admin")
    with tempfile.TemporaryDirectory() as home:
        populate(home)
        env = dict(os.environ, VMDKOPS_HOME=home)
        pairs = [
            ("vmdkops_admin --help", [admin, "--help"],
             "import click", [sys.executable, "-c", "import click"], 1.1),
            (f"vmdkops_admin vmgroup ls ({VMGROUPS} vmgroups, {VMS} VMs)", [admin, "vmgroup", "ls"],
             "import sqlalchemy.orm", [sys.executable, "-c", "import sqlalchemy.orm"], 1.5),
        ]
        missed = False
        print(f"median of {args.runs} runs each")
        for name, argv, floor_name, floor_argv, target in pairs:
            measured, floor = paired_medians(argv, floor_argv, args.runs, env)
            ratio = measured / floor
            missed |= ratio > target
            print(f"{name:<48} {measured * 1000:7.1f} ms   floor ({floor_name}) "
                  f"{floor * 1000:6.1f} ms   ratio {ratio:.2f} (target <= {target})")
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
