"""Typed errors that carry the text a user sees, and the catalogue of those
texts (the original's wording, spec admin-cli Appendix A, minus the Python
reprs and doubled spaces it leaked). The CLI prints them as ``ERROR:{text}``
with exit code 2; the executor answers them as ``{"Error": text}``."""


class VmdkopsError(Exception):
    """An error whose text is meant for the user."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message

    def __str__(self):
        return self.message


class NotFound(VmdkopsError):
    pass


class AlreadyExists(VmdkopsError):
    pass


class InvalidArgument(VmdkopsError):
    pass


class NotConfigured(VmdkopsError):
    pass


class DbAccessError(VmdkopsError):
    """The config DB cannot be opened or used (broken link, not a DB, unreachable)."""


class SchemaMismatch(DbAccessError):
    """The config DB's schema is not the one this code was written for."""


VMGROUP_NAME_PATTERN = "[a-zA-Z0-9_][a-zA-Z0-9_.-]*"

TENANT_NOT_EXIST = "Vmgroup {0} does not exist"
TENANT_ALREADY_EXIST = "Vmgroup {0} already exists"
TENANT_NAME_INVALID = "Vmgroup name {0} is invalid, only {1} is allowed"
TENANT_NOT_EMPTY = ("Cannot delete non-empty vmgroup {0}. "
                    "Remove VMs from the vmgroup before deleting it.")
TENANT_HAS_VOLUMES = ("The vmgroup has volumes in it, these must be removed/migrated "
                      "before deleting the vmgroup.")
VM_NOT_FOUND = "Cannot find vm {0}"
REPLACE_VM_EMPTY = "Replace VM cannot be empty"
VM_ALREADY_IN_TENANT = "VM '{0}' has already been associated with tenant '{1}', cannot add it again"
VM_NOT_IN_TENANT = "VM '{0}' has not been associated with tenant '{1}', cannot remove it"
VM_IN_ANOTHER_TENANT = "VM '{0}' has already been associated with tenant '{1}', can't add it"
VM_LIST_EMPTY = "VM list cannot be empty"
VM_DUPLICATE = "VMs {0} contain duplicates, they should be unique"
VM_WITH_MOUNTED_VOLUMES = "VM '{0}' has volumes mounted."
PRIVILEGE_NOT_FOUND = "No access privilege exists for ({0}, {1})"
PRIVILEGE_ALREADY_EXIST = "Access privilege for ({0}, {1}) already exists"
PRIVILEGE_INVALID_VOLUME_SIZE = "Volume max size {0}MB exceeds the total size {1}MB"
PRIVILEGE_INVALID_ALLOW_CREATE_VALUE = "Invalid value {0} for allow-create option"
PRIVILEGE_REMOVE_NOT_ALLOWED = "Removing of access privilege to 'default_datastore' is not supported"
DS_NOT_EXIST = "Datastore {0} does not exist"
DS_DEFAULT_CANNOT_USE_ALL_DS = ("Cannot use _ALL_DS as default datastore. Please use specific "
                                "datastore name or _VM_DS special datastore")
TENANT_NAME_EMPTY = "Vmgroup name is empty"
TENANT_NAME_TOO_LONG = "Vmgroup name exceeds 64 characters: {0}"
TENANT_DESC_TOO_LONG = "Vmgroup description exceeds 256 characters: {0}"
FEATURE_NOT_SUPPORTED = "This feature is not supported for vmgroup {0}."
INIT_NEEDED = ("Configuration not found. Please init configuration with "
               "'vmdkops_admin config init'.")
OPT_VOLUME_SIZE_INVALID = "Invalid volume size specified."
DEFAULT_VM_LS = "_DEFAULT tenant contains all VMs which were not added to other tenants"
