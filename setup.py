"""Packaging: the metadata lives in setup.cfg; this file installs the man pages.
(``vmdkops_admin/migrations`` is a link to the top-level ``migrations/``.)"""
import glob

from setuptools import setup

setup(data_files=[("share/man/man1", sorted(glob.glob("man/*.1")))])
