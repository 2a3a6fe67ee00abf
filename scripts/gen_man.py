#!/usr/bin/env python3
"""Regenerate man/ from the Click tree: python3 scripts/gen_man.py"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vmdkops_admin.cli import cli  # noqa: E402
from vmdkops_admin.cli.manpage import pages  # noqa: E402

man = os.path.join(ROOT, "man")
os.makedirs(man, exist_ok=True)
for stale in os.listdir(man):
    if stale.endswith(".1"):
        os.unlink(os.path.join(man, stale))
for name, text in pages(cli).items():
    with open(os.path.join(man, name), "w") as f:
        f.write(text)
    print(os.path.join("man", name))
