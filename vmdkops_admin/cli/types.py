"""Click parameter types that check and resolve what users type, with the
same messages the library gives: a datastore of the backend, a list of VM
names, a size in MB. Options built from them, shared by the commands."""

import click

SIZE_METAVAR = "Num{MB,GB,TB} - e.g. 2TB"


class DatastoreType(click.ParamType):
    """A datastore by name, resolved to the backend's ``Datastore``; with
    ``pseudo`` the access rules' ``_VM_DS`` and ``_ALL_DS`` too."""

    name = "datastore"

    def __init__(self, pseudo=True):
        self.pseudo = pseudo

    def convert(self, value, param, ctx):
        from ..backends import SPECIAL_DATASTORE_URLS, Datastore, pseudo_datastore
        from ..errors import DS_NOT_EXIST, NotFound
        from .options import backend

        if isinstance(value, Datastore):
            return value
        if self.pseudo and value in SPECIAL_DATASTORE_URLS:
            return pseudo_datastore(value)
        found = backend().datastore_by_name(value)
        if found is None:
            raise NotFound(DS_NOT_EXIST.format(value))
        return found


class VmNames(click.ParamType):
    """``vm1,vm2,...`` as a list of names (or uuids), blanks trimmed."""

    name = "vm_list"

    def __init__(self, empty_message=None):
        self.empty_message = empty_message

    def convert(self, value, param, ctx):
        from ..admin.vmgroups import split_vm_list
        from ..errors import InvalidArgument

        if isinstance(value, list):
            return value
        if self.empty_message and not value.strip(" ,"):
            raise InvalidArgument(self.empty_message)
        return split_vm_list(value)


class SizeMB(click.ParamType):
    """A limit such as ``500MB``, ``2GB`` or ``1TB`` in MB; ``unset`` or 0 give 0 (no limit)."""

    name = "size"

    def convert(self, value, param, ctx):
        from ..sizes import parse_quota_mb

        return value if isinstance(value, int) else parse_quota_mb(value) or 0


class DiskSizeMB(click.ParamType):
    """A volume's size such as ``500MB`` or ``20GB``, in MB."""

    name = "size"

    def convert(self, value, param, ctx):
        from ..errors import InvalidArgument
        from ..sizes import to_mb

        mb = value if isinstance(value, int) else to_mb(value.strip())
        if not mb:
            raise InvalidArgument(f"Invalid size '{value}': a whole number followed by MB, GB or TB "
                                  "(for example 500MB or 20GB)")
        return mb


def name_option(help_text):
    return click.option("--name", required=True, help=help_text)


vmgroup_option = name_option("The name of the vmgroup")


def volume_option(help_text='The volume, as "volume@datastore".'):
    return click.option("--volume", "full_name", required=True, help=help_text)


def owner_option(required=False):
    """``--vmgroup``: the vmgroup a volume belongs to; ``_DEFAULT`` unless required."""
    given = {"required": True} if required else {"default": "_DEFAULT", "show_default": True}
    return click.option("--vmgroup", help="Name of the vmgroup the volume belongs to.", **given)


def datastore_option(help_text, pseudo=True):
    return click.option("--datastore", required=True, type=DatastoreType(pseudo), help=help_text)


def vm_list_option(help_text, required=True, metavar="VM_LIST", empty_message=None):
    return click.option("--vm-list", required=required, metavar=metavar, type=VmNames(empty_message),
                        help=help_text)


def size_options(clearable):
    """``--volume-maxsize`` and ``--volume-totalsize``; ``clearable`` where
    ``unset`` gives a limit back."""
    unset = " ('unset' for no limit)" if clearable else ""

    def decorate(function):
        function = click.option(
            "--volume-totalsize", type=SizeMB(), metavar=SIZE_METAVAR,
            help="Maximum total size of all volume that can be created on the datastore "
                 f"for this vmgroup{unset}")(function)
        return click.option("--volume-maxsize", type=SizeMB(), metavar=SIZE_METAVAR,
                            help=f"Maximum size of the volume that can be created{unset}")(function)
    return decorate
