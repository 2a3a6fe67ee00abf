"""``vsphere-storage-for-docker``: the vsphere plugin process."""

from .. import config as configuration
from ..process import run


def main(argv=None):
    from .client import Client
    from .devices import EsxDevices, LocalDevices
    from .driver import Driver

    def make(config):
        return Driver(config, Client(config), EsxDevices() if config.Devices == "esx" else LocalDevices())

    return run(configuration.Config, make, argv)
