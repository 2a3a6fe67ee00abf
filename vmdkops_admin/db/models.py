"""The auth DB's tables. Limits in MB are NULL for "unlimited"; every table has
an integer surrogate key so listings keep insertion order on SQLite and
PostgreSQL alike. Changes to these classes need a migration in ``migrations/``
and a new ``HEAD_REVISION`` in ``vmdkops_admin.db``."""

from datetime import datetime
from typing import Optional

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..names import DEFAULT_TAKEOVER_AFTER


class Base(DeclarativeBase):
    pass


class VmGroup(Base):
    __tablename__ = "vmgroups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    default_datastore_url: Mapped[str] = mapped_column(Text)
    # Seconds a VM's plugin may be silent before another VM of the group may
    # take its volumes over (behind a fence); NULL: never.
    takeover_after: Mapped[Optional[int]] = mapped_column(Integer, default=DEFAULT_TAKEOVER_AFTER)

    vms: Mapped[list["Vm"]] = relationship(
        back_populates="vmgroup", order_by="Vm.id", cascade="all, delete-orphan")
    privileges: Mapped[list["Privilege"]] = relationship(
        back_populates="vmgroup", order_by="Privilege.id", cascade="all, delete-orphan")

    @classmethod
    def named(cls, session, name):
        """The vmgroup of a name, or None."""
        return session.scalars(select(cls).where(cls.name == name)).first()


class Vm(Base):
    """A VM's membership of a vmgroup, with the VM's last known name."""
    __tablename__ = "vms"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[Optional[str]] = mapped_column(Text)
    vmgroup_id: Mapped[int] = mapped_column(ForeignKey("vmgroups.id"), index=True)

    vmgroup: Mapped[VmGroup] = relationship(back_populates="vms")


class VmReport(Base):
    """When a VM's plugin last reported to an executor (any VM, member of a
    vmgroup or not): its liveness, for takeovers."""
    __tablename__ = "vm_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vm_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    vm_name: Mapped[Optional[str]] = mapped_column(Text)
    reported: Mapped[datetime] = mapped_column(DateTime)


class Privilege(Base):
    """What a vmgroup may do on one datastore (or on ``_VM_DS://`` / ``_ALL_DS://``)."""
    __tablename__ = "privileges"
    __table_args__ = (UniqueConstraint("vmgroup_id", "datastore_url"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vmgroup_id: Mapped[int] = mapped_column(ForeignKey("vmgroups.id"))
    datastore_url: Mapped[str] = mapped_column(Text)
    allow_create: Mapped[bool] = mapped_column(Boolean, default=False)
    max_volume_size: Mapped[Optional[int]] = mapped_column(Integer)
    usage_quota: Mapped[Optional[int]] = mapped_column(Integer)

    vmgroup: Mapped[VmGroup] = relationship(back_populates="privileges")


class Volume(Base):
    """The index of volumes: what ``volume ls`` lists and quotas sum up. The
    side-car next to each disk stays the truth; ``volume reconcile`` repairs
    this index from it."""
    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("datastore_url", "vmgroup_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vmgroup_id: Mapped[int] = mapped_column(ForeignKey("vmgroups.id"), index=True)
    datastore_url: Mapped[str] = mapped_column(Text)
    name: Mapped[str] = mapped_column(String(100))
    size_mb: Mapped[int] = mapped_column(Integer)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    # creating | ready | removing: a row that is not "ready" marks an operation
    # that reconcile must finish or undo.
    state: Mapped[str] = mapped_column(String(16), default="creating")
    attached_vm_uuid: Mapped[Optional[str]] = mapped_column(String(36), index=True)
    policy_id: Mapped[Optional[int]] = mapped_column(ForeignKey("policies.id"))
    created: Mapped[Optional[datetime]] = mapped_column(DateTime)
    created_by: Mapped[Optional[str]] = mapped_column(Text)


class Policy(Base):
    """A storage policy that volumes may be created with."""
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    content: Mapped[str] = mapped_column(Text)


class UsageSnapshot(Base):
    """One vmgroup's use of one datastore at one time (``report usage --record``).
    Names, not keys: history outlives vmgroups and datastores."""
    __tablename__ = "usage_snapshots"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    taken: Mapped[datetime] = mapped_column(DateTime, index=True)
    vmgroup: Mapped[str] = mapped_column(Text)
    datastore: Mapped[str] = mapped_column(Text)
    volumes: Mapped[int] = mapped_column(Integer)
    attached: Mapped[int] = mapped_column(Integer)
    provisioned_mb: Mapped[int] = mapped_column(Integer)
    allocated_mb: Mapped[Optional[int]] = mapped_column(Integer)
    total_size: Mapped[Optional[int]] = mapped_column(Integer)


class AuditEvent(Base):
    """A change made through vmdkops_admin or an operation of the executor."""
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, index=True)
    source: Mapped[str] = mapped_column(String(16))   # admin | executor
    actor: Mapped[str] = mapped_column(Text)          # the user, or the VM
    action: Mapped[str] = mapped_column(Text)
    vmgroup: Mapped[Optional[str]] = mapped_column(Text)
    vm: Mapped[Optional[str]] = mapped_column(Text)
    target: Mapped[Optional[str]] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | failed
    error: Mapped[Optional[str]] = mapped_column(Text)
    detail: Mapped[Optional[str]] = mapped_column(Text)  # what a takeover took from whom
