"""usage snapshots (report history) and the audit trail

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "usage_snapshots",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("taken", sa.DateTime, nullable=False),
        sa.Column("vmgroup", sa.Text, nullable=False),
        sa.Column("datastore", sa.Text, nullable=False),
        sa.Column("volumes", sa.Integer, nullable=False),
        sa.Column("attached", sa.Integer, nullable=False),
        sa.Column("provisioned_mb", sa.Integer, nullable=False),
        sa.Column("allocated_mb", sa.Integer),
        sa.Column("total_size", sa.Integer),
    )
    op.create_index("ix_usage_snapshots_taken", "usage_snapshots", ["taken"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("vmgroup", sa.Text),
        sa.Column("vm", sa.Text),
        sa.Column("target", sa.Text),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_audit_events_at", "audit_events", ["at"])


def downgrade():
    op.drop_index("ix_audit_events_at", "audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_usage_snapshots_taken", "usage_snapshots")
    op.drop_table("usage_snapshots")
