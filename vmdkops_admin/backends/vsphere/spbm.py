"""Storage policies on vCenter: SPBM profiles, through the PBM endpoint with
the session of the vSphere backend (pyvmomi's ``pbm`` types).

A policy's content is the original's vSAN policy text, e.g.
``(("hostFailuresToTolerate" i1) ("forceProvisioning" i1))``; on vCenter it
becomes a requirement profile of the same name whose rules are those
capabilities in the ``VSAN`` namespace."""

from ...errors import NotFound, VmdkopsError
from ...vsan_rules import parse_vsan, vsan_text

OURS = "Created by vmdkops_admin"


class Spbm:
    """The profile manager of a vCenter, reached with the backend's session."""

    def __init__(self, backend):
        self.backend = backend
        self._manager = None
        self._cookie = None

    def manager(self):
        from pyVmomi import SoapStubAdapter, pbm

        backend = self.backend
        cookie = backend.si._stub.cookie
        if self._manager is not None and cookie == self._cookie:
            return self._manager
        session_id = cookie.split("=", 1)[1].split(";")[0].strip('"')
        settings = backend.settings
        last = None
        # A vCenter serves PBM at /pbm/sdk; the simulator at /pbm.
        for path in ("/pbm/sdk", "/pbm"):
            stub = SoapStubAdapter(host=settings["host"], port=int(settings.get("port", 443)), path=path,
                                   version="pbm.version.version11", sslContext=backend.ssl_context(),
                                   requestContext={"vcSessionCookie": session_id})
            stub.cookie = cookie
            backend.count_round_trips(stub)
            try:
                content = pbm.ServiceInstance("ServiceInstance", stub).RetrieveContent()
            except Exception as exc:  # noqa: BLE001 - try the other path, then report
                last = exc
                continue
            self._manager, self._cookie = content.profileManager, cookie
            return self._manager
        raise VmdkopsError(f"Cannot reach the storage policy service (SPBM) of vCenter: {last}")

    def profiles(self):
        """{name: profile} of every storage requirement profile."""
        from pyVmomi import pbm

        manager = self.manager()
        ids = manager.PbmQueryProfile(resourceType=pbm.profile.ResourceType(resourceType="STORAGE"),
                                      profileCategory="REQUIREMENT")
        return {p.name: p for p in (manager.PbmRetrieveContent(profileIds=ids) if ids else [])}

    def profile_id(self, name):
        profile = self.profiles().get(name)
        if profile is None:
            raise NotFound(f"Storage policy {name} does not exist in vCenter")
        return profile.profileId.uniqueId

    @staticmethod
    def _constraints(content):
        from pyVmomi import pbm

        capability = pbm.capability
        rules = [capability.CapabilityInstance(
            id=capability.CapabilityMetadata.UniqueId(namespace="VSAN", id=key),
            constraint=[capability.ConstraintInstance(
                propertyInstance=[capability.PropertyInstance(id=key, value=value)])])
            for key, value in parse_vsan(content)]
        return pbm.profile.SubProfileCapabilityConstraints(
            subProfiles=[pbm.profile.SubProfileCapabilityConstraints.SubProfile(
                name="VSAN sub-profile", capability=rules)])

    def create(self, name, content):
        from pyVmomi import pbm

        constraints = self._constraints(content)
        if name in self.profiles():
            raise VmdkopsError(f"Error: A storage policy named {name} already exists in vCenter")
        self.manager().PbmCreate(createSpec=pbm.profile.CapabilityBasedProfileCreateSpec(
            name=name, description=OURS, category="REQUIREMENT",
            resourceType=pbm.profile.ResourceType(resourceType="STORAGE"), constraints=constraints))

    def update(self, name, content):
        """New rules for a profile; where PbmUpdate is not served (the
        simulator), the profile is made again under the same name."""
        from pyVmomi import pbm, vmodl

        constraints = self._constraints(content)
        profile = self.profiles().get(name)
        if profile is None:
            self.create(name, content)
            return
        _refuse_theirs(profile)
        spec = pbm.profile.CapabilityBasedProfileUpdateSpec(description=OURS, constraints=constraints)
        try:
            self.manager().PbmUpdate(profileId=profile.profileId, updateSpec=spec)
        except (vmodl.fault.MethodNotFound, vmodl.fault.NotImplemented, vmodl.fault.NotSupported):
            self.delete(name)
            self.create(name, content)

    def delete(self, name):
        profile = self.profiles().get(name)
        if profile is not None:
            _refuse_theirs(profile)
            self.manager().PbmDelete(profileId=[profile.profileId])


def _refuse_theirs(profile):
    """Only the profiles vmdkops_admin made are changed or removed by it."""
    if profile.description != OURS:
        raise VmdkopsError(f"Error: The storage policy {profile.name} in vCenter was not made by "
                           "vmdkops_admin; change it in vCenter")


def rules_text(profile):
    """A profile's rules as vSAN policy text (any namespace's capabilities)."""
    rules = []
    constraints = getattr(profile, "constraints", None)
    for sub in getattr(constraints, "subProfiles", None) or []:
        for capability in sub.capability or []:
            for constraint in capability.constraint or []:
                for prop in constraint.propertyInstance or []:
                    key = prop.id if capability.id.namespace == "VSAN" else \
                        f"{capability.id.namespace}.{prop.id}"
                    rules.append((key, prop.value))
    return vsan_text(rules) if rules else ""
