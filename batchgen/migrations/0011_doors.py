# Bot tokens encrypted at rest, webhook secrets kept as their HMAC (batchgen/models/secrets.py),
# and ProcessedUpdate.note (what intake replaced to keep an update, or why it could not).
# Raw SQL in the data step: the model's field would try to decrypt the plaintext rows.

from django.db import migrations, models

import batchgen.models.secrets


def _rows(schema_editor, sql):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def encrypt_secrets(apps, schema_editor):
    from batchgen.models.secrets import encrypt, webhook_digest

    rows = _rows(schema_editor, "SELECT id, telegram_token, webhook_secret FROM batchgen_bot")
    with schema_editor.connection.cursor() as cursor:
        for bot_id, token, secret in rows:
            cursor.execute(
                "UPDATE batchgen_bot SET telegram_token = %s, webhook_secret = %s WHERE id = %s",
                [encrypt(token) if token else token, webhook_digest(secret) if secret else "",
                 bot_id])


def decrypt_tokens(apps, schema_editor):
    # An HMAC cannot be undone: those bots need their webhook set again (admin action).
    from batchgen.models.secrets import decrypt

    rows = _rows(schema_editor, "SELECT id, telegram_token FROM batchgen_bot")
    with schema_editor.connection.cursor() as cursor:
        for bot_id, token in rows:
            cursor.execute(
                "UPDATE batchgen_bot SET telegram_token = %s, webhook_secret = '' WHERE id = %s",
                [decrypt(token) if token else token, bot_id])


class Migration(migrations.Migration):

    dependencies = [
        ('batchgen', '0010_chat_aware_delivery'),
    ]

    operations = [
        migrations.AddField(
            model_name='processedupdate',
            name='note',
            field=models.CharField(blank=True, default='', help_text='What intake changed to keep it (characters replaced), or why it could not.', max_length=200),
        ),
        migrations.AlterField(
            model_name='bot',
            name='telegram_token',
            field=batchgen.models.secrets.EncryptedTextField(help_text='Never shown back once saved.'),
        ),
        migrations.RunPython(encrypt_secrets, decrypt_tokens),
    ]
