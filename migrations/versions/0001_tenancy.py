"""vmgroups, their VMs and their datastore privileges

Revision ID: 0001
Revises:
"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "vmgroups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("description", sa.String(256), nullable=False),
        sa.Column("default_datastore_url", sa.Text, nullable=False),
    )
    op.create_table(
        "vms",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("name", sa.Text),
        sa.Column("vmgroup_id", sa.Integer, sa.ForeignKey("vmgroups.id"), nullable=False),
    )
    op.create_index("ix_vms_vmgroup_id", "vms", ["vmgroup_id"])
    op.create_table(
        "privileges",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vmgroup_id", sa.Integer, sa.ForeignKey("vmgroups.id"), nullable=False),
        sa.Column("datastore_url", sa.Text, nullable=False),
        sa.Column("allow_create", sa.Boolean, nullable=False),
        sa.Column("max_volume_size", sa.Integer),
        sa.Column("usage_quota", sa.Integer),
        sa.UniqueConstraint("vmgroup_id", "datastore_url"),
    )


def downgrade():
    op.drop_table("privileges")
    op.drop_index("ix_vms_vmgroup_id", "vms")
    op.drop_table("vms")
    op.drop_table("vmgroups")
