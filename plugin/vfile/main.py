"""``vfile``: the shared-volume plugin process, and ``vfile --check
[--repair]``, which asks etcd and Docker and serves nothing."""

import logging

from .. import config as configuration
from ..process import run


def check(config, args):
    from . import check as checking
    from .node import Node

    logging.basicConfig(level=logging.WARNING, format=f"{configuration.VfileConfig.PROGRAM}: %(message)s")
    return checking.run(Node(config), args.repair)


def main(argv=None):
    from .driver import VfileDriver

    return run(configuration.VfileConfig, VfileDriver, argv, checking=check)
