"""the volume index and storage policies

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "policies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("content", sa.Text, nullable=False),
    )
    op.create_table(
        "volumes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vmgroup_id", sa.Integer, sa.ForeignKey("vmgroups.id"), nullable=False),
        sa.Column("datastore_url", sa.Text, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("size_mb", sa.Integer, nullable=False),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attached_vm_uuid", sa.String(36)),
        sa.Column("policy_id", sa.Integer, sa.ForeignKey("policies.id")),
        sa.Column("created", sa.DateTime),
        sa.Column("created_by", sa.Text),
        sa.UniqueConstraint("datastore_url", "vmgroup_id", "name"),
    )
    op.create_index("ix_volumes_vmgroup_id", "volumes", ["vmgroup_id"])
    op.create_index("ix_volumes_attached_vm_uuid", "volumes", ["attached_vm_uuid"])


def downgrade():
    op.drop_index("ix_volumes_attached_vm_uuid", "volumes")
    op.drop_index("ix_volumes_vmgroup_id", "volumes")
    op.drop_table("volumes")
    op.drop_table("policies")
