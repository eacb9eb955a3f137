"""Seed the audit chain head and, on PostgreSQL, make the audit table append-only."""

from django.db import migrations

GUARD_FUNCTION = """
CREATE OR REPLACE FUNCTION governance_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Only the SET NULL of the two unhashed foreign keys (a user or project was
        -- deleted) may touch an existing row; every hashed column stays as written.
        IF (to_jsonb(NEW) - 'actor_id' - 'project_id') = (to_jsonb(OLD) - 'actor_id' - 'project_id')
           AND (NEW.actor_id IS NULL OR NEW.actor_id = OLD.actor_id)
           AND (NEW.project_id IS NULL OR NEW.project_id = OLD.project_id) THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'governance_auditevent is append-only: % rejected', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""

CREATE_TRIGGERS = """
CREATE TRIGGER governance_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON governance_auditevent
    FOR EACH ROW EXECUTE FUNCTION governance_auditevent_append_only();
CREATE TRIGGER governance_auditevent_no_truncate
    BEFORE TRUNCATE ON governance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION governance_auditevent_append_only();
"""

DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS governance_auditevent_no_truncate ON governance_auditevent;
DROP TRIGGER IF EXISTS governance_auditevent_no_update_delete ON governance_auditevent;
DROP FUNCTION IF EXISTS governance_auditevent_append_only();
"""


def install_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(GUARD_FUNCTION, params=None)
        schema_editor.execute(CREATE_TRIGGERS, params=None)


def remove_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGERS, params=None)


def seed_head(apps, schema_editor):
    head_model = apps.get_model("governance", "AuditChainHead")
    head_model.objects.get_or_create(pk=1, defaults={"sequence": 0, "hash": "0" * 64})


class Migration(migrations.Migration):
    dependencies = [("governance", "0001_initial")]

    operations = [
        migrations.RunPython(seed_head, migrations.RunPython.noop),
        migrations.RunPython(install_triggers, remove_triggers),
    ]
