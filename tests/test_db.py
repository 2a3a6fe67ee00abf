"""The auth DB layer on SQLite and PostgreSQL: the models (spec admin-cli §6.I),
foreign keys, and the migrations with the refusal of a DB whose schema is not
this code's."""

import glob
import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vmdkops_admin import db
from vmdkops_admin.db.models import Privilege, Vm, VmGroup, Volume


@pytest.fixture
def url(db_kind, tmp_path, request):
    if db_kind == "sqlite":
        return db.sqlite_url(tmp_path / "auth.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def engine(url):
    from vmdkops_admin.db.lifecycle import _create_schema

    _create_schema(url)
    engine = db.connect(url, "test DB")
    yield engine
    engine.dispose()


def new_group(session, name=None, vms=(), privileges=()):
    group = VmGroup(uuid=str(uuid.uuid4()), name=name or f"vg_{uuid.uuid4().hex[:8]}",
                    description="Some tenant", default_datastore_url="")
    group.vms = [Vm(uuid=vm_uuid, name=vm_name) for vm_uuid, vm_name in vms]
    group.privileges = [Privilege(datastore_url=u, allow_create=c, max_volume_size=m, usage_quota=q)
                        for u, c, m, q in privileges]
    session.add(group)
    session.commit()
    return group


def test_s99_create_vmgroup_with_vms_and_privilege(engine):
    with Session(engine) as session:
        vm_uuid = str(uuid.uuid4())
        group = new_group(session, vms=[(vm_uuid, "vm1_test")],
                          privileges=[("datastore1_url", False, None, None)])
        row = session.execute(text("SELECT uuid, name, description FROM vmgroups WHERE id = :id"),
                              {"id": group.id}).one()
        assert uuid.UUID(row.uuid) and row.description == "Some tenant"
        assert session.execute(text("SELECT uuid FROM vms WHERE vmgroup_id = :id"),
                               {"id": group.id}).scalars().all() == [vm_uuid]
        assert session.execute(
            text("SELECT datastore_url, allow_create, max_volume_size, usage_quota FROM privileges "
                 "WHERE vmgroup_id = :id"), {"id": group.id}).one() == ("datastore1_url", False, None, None)


def test_s100_s101_add_and_remove_vms_in_order(engine):
    with Session(engine) as session:
        group = new_group(session)
        added = [(str(uuid.uuid4()), "vm_a"), (str(uuid.uuid4()), "vm_b")]
        group.vms.extend(Vm(uuid=u, name=n) for u, n in added)
        session.commit()
        session.expire_all()
        assert [(vm.uuid, vm.name) for vm in group.vms] == added
        group.vms.clear()
        session.commit()
        assert session.scalar(select(Vm).where(Vm.vmgroup_id == group.id)) is None


def test_s102_to_s105_updates(engine):
    with Session(engine) as session:
        group = new_group(session)
        group.name, group.description = "renamed_group", "new description"
        group.default_datastore_url = "new_default_ds_url"
        group.privileges.append(Privilege(datastore_url="datastore1_url", allow_create=False))
        session.commit()
        session.expire_all()
        stored = session.scalars(select(VmGroup).where(VmGroup.id == group.id)).one()
        assert (stored.name, stored.description, stored.default_datastore_url) == (
            "renamed_group", "new description", "new_default_ds_url")
        assert [p.datastore_url for p in stored.privileges] == ["datastore1_url"]


def test_s106_s107_list_and_remove(engine):
    with Session(engine) as session:
        first = new_group(session, vms=[(str(uuid.uuid4()), "a"), (str(uuid.uuid4()), "b")],
                          privileges=[("ds_url", True, 500, 1000)])
        second = new_group(session)
        names = session.scalars(select(VmGroup.name).order_by(VmGroup.id)).all()
        assert names == ["_DEFAULT", first.name, second.name]
        assert second.privileges == [] and second.default_datastore_url == ""
        session.delete(first)
        session.commit()
        for table in ("vms", "privileges"):
            assert session.execute(text(f"SELECT count(*) FROM {table} WHERE vmgroup_id = :id"),
                                   {"id": first.id}).scalar() == 0
        assert session.get(VmGroup, second.id) is not None


@pytest.mark.parametrize("table, values", [
    ("vms", "(uuid, name, vmgroup_id) VALUES ('u-1', 'orphan', 9999)"),
    ("privileges", "(vmgroup_id, datastore_url, allow_create) VALUES (9999, 'x', false)"),
    ("volumes", "(vmgroup_id, datastore_url, name, size_mb, options, state) "
                "VALUES (9999, 'x', 'v', 1, '{}', 'ready')")])
def test_orphan_rows_are_refused(engine, table, values):
    with engine.connect() as connection:
        with pytest.raises(IntegrityError):
            connection.execute(text(f"INSERT INTO {table} {values}"))


def test_a_vmgroup_with_indexed_volumes_cannot_be_deleted(engine):
    with Session(engine) as session:
        group = new_group(session)
        session.add(Volume(vmgroup_id=group.id, datastore_url="x", name="v", size_mb=1,
                           options={}, state="ready"))
        session.commit()
        session.execute(text("DELETE FROM privileges WHERE vmgroup_id = :id"), {"id": group.id})
        with pytest.raises(IntegrityError):
            session.execute(text("DELETE FROM vmgroups WHERE id = :id"), {"id": group.id})


# -- migrations ----------------------------------------------------------------------

def test_revisions_match_the_migration_scripts():
    from vmdkops_admin.db.migrate import script_revisions

    assert script_revisions() == db.REVISIONS


def test_models_match_the_migrations(engine):
    """What the models declare is what the migrations built (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from vmdkops_admin.db.models import Base

    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def install_db(home, url, db_kind):
    """Make ``url`` this host's config DB."""
    if db_kind == "sqlite":
        (home / "auth-db").symlink_to(url[len("sqlite:///"):])
        return
    (home / "auth-db.url").write_text(url)


def test_old_revision_is_refused_until_upgraded(admin, inventory, home, db_kind, url):
    from vmdkops_admin.db.migrate import upgrade

    engine = db.create_engine(url)
    upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO vmgroups (uuid, name, description, default_datastore_url) "
            "VALUES ('22222222-2222-2222-2222-222222222222', 'old_group', 'kept', '_VM_DS://')"))
    engine.dispose()
    install_db(home, url, db_kind)

    message = admin.err("vmgroup ls")
    assert f"has schema revision 0001, this vmdkops_admin needs revision {db.HEAD_REVISION}" in message
    assert message.endswith("Run 'vmdkops_admin config upgrade' to upgrade it.")
    assert admin.err("vmgroup create --name=x --default-datastore=_VM_DS") == message

    out = admin.ok("config upgrade")
    assert out.endswith(f"from revision 0001 to {db.HEAD_REVISION}\n")
    if db_kind == "sqlite":
        assert len(glob.glob(url[len("sqlite:///"):] + ".bak_rev0001_*")) == 1
    row = [line.split() for line in admin.ok("vmgroup ls").splitlines()][2]
    assert row == ["22222222-2222-2222-2222-222222222222", "old_group", "kept", "_VM_DS", "30s"]
    assert admin.ok("config upgrade").startswith("Config DB at ")


def test_newer_revision_is_refused(admin, inventory, home, db_kind, url):
    from vmdkops_admin.db.lifecycle import _create_schema

    _create_schema(url)
    engine = db.create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    install_db(home, url, db_kind)
    assert admin.err("vmgroup ls").endswith(
        f"has schema revision 9999, which is newer than this vmdkops_admin knows (revision "
        f"{db.HEAD_REVISION}). Upgrade vmdkops_admin on this host.")
