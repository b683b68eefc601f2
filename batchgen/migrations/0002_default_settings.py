from __future__ import annotations

from django.db import migrations

DEFAULTS = {"batch_mode_enabled": False, "batch_size": 1}


def create_defaults(apps, schema_editor) -> None:
    Setting = apps.get_model("batchgen", "Setting")
    for key, value in DEFAULTS.items():
        Setting.objects.get_or_create(key=key, defaults={"value": value})


class Migration(migrations.Migration):
    dependencies = [("batchgen", "0001_initial")]
    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
