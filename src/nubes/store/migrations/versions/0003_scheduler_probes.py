"""scheduler aggregates server groups probes

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "aggregates",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("availability_zone", sa.String(length=64), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("aggregates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_aggregates_availability_zone"), ["availability_zone"], unique=False
        )

    op.create_table(
        "aggregate_hosts",
        sa.Column("aggregate_id", sa.String(length=32), nullable=False),
        sa.Column("host_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["aggregate_id"], ["aggregates.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("aggregate_id", "host_id"),
    )
    with op.batch_alter_table("aggregate_hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_aggregate_hosts_host_id"), ["host_id"], unique=False)

    op.create_table(
        "server_groups",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("project_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("policy", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("server_groups", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_server_groups_project_id"), ["project_id"], unique=False
        )

    op.create_table(
        "server_group_members",
        sa.Column("group_id", sa.String(length=36), nullable=False),
        sa.Column("instance_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["server_groups.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["instance_id"], ["instances.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "instance_id"),
        sa.UniqueConstraint("instance_id"),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cpu_allocation_ratio", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("ram_allocation_ratio", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("disk_allocation_ratio", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("max_instances", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("instance_count", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("probe_errors", sa.JSON(), nullable=False, server_default=sa.text("'{}'"))
        )
        batch_op.add_column(sa.Column("metrics_at", sa.DateTime(), nullable=True))
        batch_op.create_index("ix_hosts_updated_at", ["updated_at"], unique=False)

    op.execute(
        "UPDATE hosts SET instance_count = (SELECT count(*) FROM instances "
        "WHERE instances.host_id = hosts.id AND instances.state != 'deleted')"
    )

    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("availability_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("requirements", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("rank", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("rank")
        batch_op.drop_column("requirements")
        batch_op.drop_column("availability_zone")

    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index("ix_hosts_updated_at")
        batch_op.drop_column("metrics_at")
        batch_op.drop_column("probe_errors")
        batch_op.drop_column("instance_count")
        batch_op.drop_column("max_instances")
        batch_op.drop_column("disk_allocation_ratio")
        batch_op.drop_column("ram_allocation_ratio")
        batch_op.drop_column("cpu_allocation_ratio")

    op.drop_table("server_group_members")
    with op.batch_alter_table("server_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_server_groups_project_id"))

    op.drop_table("server_groups")
    with op.batch_alter_table("aggregate_hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_aggregate_hosts_host_id"))

    op.drop_table("aggregate_hosts")
    with op.batch_alter_table("aggregates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_aggregates_availability_zone"))

    op.drop_table("aggregates")
