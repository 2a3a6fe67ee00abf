"""Packaging: the metadata lives in setup.cfg; this file installs the man pages,
the systemd unit templates and the cron example. (``vmdkops_admin/migrations`` is a link to the
top-level ``migrations/``.)"""
import glob

from setuptools import setup

setup(data_files=[("share/man/man1", sorted(glob.glob("man/*.1"))),
                  ("share/vmdkops/systemd", sorted(glob.glob("scripts/systemd/*.service"))),
                  ("share/vmdkops/cron.d", ["scripts/cron/vmdkops-report"])])
