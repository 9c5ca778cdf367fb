"""notifications: preferences, muted conversations, device endpoints, in-app notifications, deliveries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('notification_preferences',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('quiet_start', sa.Time(), nullable=True),
    sa.Column('quiet_end', sa.Time(), nullable=True),
    sa.Column('time_zone', sa.String(length=64), server_default='UTC', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("channel IN ('push', 'email', 'sms', 'in_app')", name=op.f('ck_notification_preferences_channel')),
    sa.CheckConstraint('(quiet_start IS NULL) = (quiet_end IS NULL)', name=op.f('ck_notification_preferences_quiet_hours_complete')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notification_preferences_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'channel', name=op.f('pk_notification_preferences'))
    )
    op.create_table('muted_conversations',
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('conversation_id', sa.UUID(), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.id'], name=op.f('fk_muted_conversations_conversation_id_conversations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_muted_conversations_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'conversation_id', name=op.f('pk_muted_conversations'))
    )
    op.create_table('device_endpoints',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('token', sa.String(length=4096), nullable=False),
    sa.Column('sns_endpoint_arn', sa.String(length=1024), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('disabled_reason', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("platform IN ('apns', 'apns_sandbox', 'fcm')", name=op.f('ck_device_endpoints_platform')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_device_endpoints_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_device_endpoints')),
    sa.UniqueConstraint('platform', 'token', name='uq_device_endpoints_platform_token'),
    sa.UniqueConstraint('sns_endpoint_arn', name=op.f('uq_device_endpoints_sns_endpoint_arn'))
    )
    op.create_index('ix_device_endpoints_user_id', 'device_endpoints', ['user_id'], unique=False)
    op.create_table('in_app_notifications',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('category', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('conversation_id', sa.UUID(), nullable=True),
    sa.Column('message_id', sa.UUID(), nullable=True),
    sa.Column('read_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("category IN ('message', 'mention', 'system')", name=op.f('ck_in_app_notifications_category')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_in_app_notifications_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_in_app_notifications'))
    )
    op.create_index('ix_in_app_notifications_user_id_created_at', 'in_app_notifications', ['user_id', 'created_at'], unique=False)
    op.create_table('notification_deliveries',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.UUID(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('target', sa.String(length=1024), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('provider_message_id', sa.String(length=256), nullable=True),
    sa.Column('error', sa.String(length=1000), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("channel IN ('push', 'email', 'sms', 'in_app')", name=op.f('ck_notification_deliveries_channel')),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'skipped')", name=op.f('ck_notification_deliveries_status')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_notification_deliveries_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification_deliveries')),
    sa.UniqueConstraint('job_id', 'channel', 'target', name='uq_notification_deliveries_job_id_channel_target')
    )
    op.create_index('ix_notification_deliveries_user_id_created_at', 'notification_deliveries', ['user_id', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_notification_deliveries_user_id_created_at', table_name='notification_deliveries')
    op.drop_table('notification_deliveries')
    op.drop_index('ix_in_app_notifications_user_id_created_at', table_name='in_app_notifications')
    op.drop_table('in_app_notifications')
    op.drop_index('ix_device_endpoints_user_id', table_name='device_endpoints')
    op.drop_table('device_endpoints')
    op.drop_table('muted_conversations')
    op.drop_table('notification_preferences')
