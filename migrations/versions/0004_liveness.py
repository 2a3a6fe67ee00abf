"""the VMs' plugin reports (liveness), each vmgroup's takeover-after and the
audit's detail (of a takeover)

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "vm_reports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("vm_uuid", sa.String(36), nullable=False, unique=True),
        sa.Column("vm_name", sa.Text),
        sa.Column("reported", sa.DateTime, nullable=False),
    )
    with op.batch_alter_table("vmgroups") as batch:
        batch.add_column(sa.Column("takeover_after", sa.Integer, server_default="30"))
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("detail", sa.Text))


def downgrade():
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("detail")
    with op.batch_alter_table("vmgroups") as batch:
        batch.drop_column("takeover_after")
    op.drop_table("vm_reports")
