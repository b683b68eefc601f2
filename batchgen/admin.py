"""Admin for every model; Setting values are validated per key, tokens are write-only."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from batchgen.models import BatchRun, Bot, Chat, Generation, Message, QueueItem, Setting


class BotForm(forms.ModelForm):
    # Write-only: the saved token is never rendered back into the page.
    telegram_token = forms.CharField(
        required=False, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The token @BotFather gave you (123456:ABC…), checked with Telegram on save. "
                  "Write-only: when editing, leave empty to keep the saved token.",
    )

    class Meta:
        model = Bot
        fields = ["name", "telegram_token", "persona", "system_prompt", "is_active"]

    def clean_telegram_token(self) -> str:
        token = self.cleaned_data["telegram_token"]
        if token:
            return token
        if self.instance.pk:
            return Bot.objects.only("telegram_token").get(pk=self.instance.pk).telegram_token
        raise forms.ValidationError("telegram_token is required for a new bot")

    def clean(self) -> dict:
        """Saving calls getMe: a wrong token is refused with Telegram's reason."""
        from batchgen.intake.bot_api import BotApiError
        from batchgen.intake.setup import check_token

        cleaned = super().clean()
        token = cleaned.get("telegram_token")
        if token:
            try:
                identity = check_token(token)
            except BotApiError as exc:
                self.add_error("telegram_token", f"Telegram refused this token: {exc}")
            else:
                self.instance.telegram_id = identity.telegram_id
                self.instance.username = identity.username
        return cleaned


@admin.register(Bot)
class BotAdmin(admin.ModelAdmin):
    form = BotForm
    list_display = ["name", "username", "is_active", "persona_excerpt", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "username", "persona"]
    readonly_fields = ["username"]
    actions = ["use_webhook", "use_polling"]

    @admin.action(description="Receive updates by webhook (setWebhook)")
    def use_webhook(self, request: HttpRequest, bots) -> None:
        from batchgen.intake.setup import switch_delivery

        for bot in bots:
            self._report(request, bot, switch_delivery, bot, webhook=True)

    @admin.action(description="Receive updates with telegram_poll (deleteWebhook)")
    def use_polling(self, request: HttpRequest, bots) -> None:
        from batchgen.intake.setup import switch_delivery

        for bot in bots:
            self._report(request, bot, switch_delivery, bot, webhook=False)

    def _report(self, request: HttpRequest, bot: Bot, action, *args, **kwargs) -> None:
        from batchgen.intake.bot_api import BotApiError

        try:
            messages.success(request, f"{bot}: {action(*args, **kwargs)}")
        except (BotApiError, ValueError) as exc:
            messages.error(request, f"{bot}: {exc}")

    @admin.display(description="persona")
    def persona_excerpt(self, bot: Bot) -> str:
        return bot.persona[:80]


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ["title", "telegram_chat_id", "created_at"]
    search_fields = ["title", "telegram_chat_id"]
    actions = ["all_bots_reply"]

    @admin.action(description="Every active bot replies here, in one batch")
    def all_bots_reply(self, request: HttpRequest, chats) -> None:
        from batchgen.models import MAX_BATCH_SIZE
        from batchgen.pipeline import generate_for_multiple_bots

        bot_ids = list(Bot.objects.filter(is_active=True).values_list("id", flat=True))
        for chat in chats:
            try:
                run = generate_for_multiple_bots(bot_ids[:MAX_BATCH_SIZE], chat.id)
            except ValueError as exc:
                messages.error(request, f"{chat}: {exc}")
            else:
                messages.success(request, f"{chat}: batch {run.id} queued with {run.size} bots.")


class SettingForm(forms.ModelForm):
    value = forms.CharField(help_text="JSON: true / false for batch_mode_enabled, "
                                      "an integer 1..50 for batch_size.")

    class Meta:
        model = Setting
        fields = ["key", "value"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["value"] = json.dumps(self.instance.value)

    def clean_value(self) -> object:
        raw = self.cleaned_data["value"].strip()
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            # Bare words such as maybe are kept as strings so the per-key rule names them.
            return raw


@admin.register(Setting)
class SettingAdmin(admin.ModelAdmin):
    form = SettingForm
    list_display = ["key", "value", "updated_at"]
    change_list_template = "admin/batchgen/setting/change_list.html"

    def get_urls(self) -> list:
        toggle = self.admin_site.admin_view(require_POST(self.toggle_batch_mode))
        return [path("toggle-batch-mode/", toggle, name="batchgen_setting_toggle"),
                *super().get_urls()]

    def toggle_batch_mode(self, request: HttpRequest) -> HttpResponseRedirect:
        """One click for staff: flip batch_mode_enabled (POST with CSRF)."""
        if not self.has_change_permission(request):
            messages.error(request, "You may not change settings.")
        else:
            enabled = not Setting.load().batch_mode_enabled
            Setting.objects.update_or_create(key="batch_mode_enabled",
                                             defaults={"value": enabled})
            messages.success(request, f"Batch mode is now {'on' if enabled else 'off'}.")
        return HttpResponseRedirect(request.POST.get("next") or
                                    reverse("admin:batchgen_setting_changelist"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        Setting.ensure_defaults()  # every known setting is always listed, ready to edit
        extra_context = {**(extra_context or {}), "batch_settings": Setting.load()}
        return super().changelist_view(request, extra_context)


@admin.register(QueueItem)
class QueueItemAdmin(admin.ModelAdmin):
    list_display = ["id", "bot", "chat", "priority", "status", "attempts", "available_at",
                    "lease_expires_at", "batch_run", "created_at"]
    list_filter = ["status", "bot", "chat"]
    search_fields = ["bot__name", "chat__title", "last_error"]
    list_select_related = ["bot", "chat", "batch_run"]
    raw_id_fields = ["batch_run"]


@admin.register(BatchRun)
class BatchRunAdmin(admin.ModelAdmin):
    list_display = ["id", "mode", "status", "size", "workers", "provider", "model",
                    "successes", "failures", "duration_s", "throughput", "cost_usd", "created_at"]
    list_filter = ["mode", "status", "provider"]
    search_fields = ["id", "model", "rq_job_id"]
    date_hierarchy = "created_at"


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ["id", "batch_run", "bot", "chat", "ok", "error_kind", "latency_s",
                    "prompt_tokens", "completion_tokens", "provider", "model"]
    list_filter = ["ok", "error_kind", "provider"]
    search_fields = ["text", "error", "prompt"]
    list_select_related = ["batch_run", "bot", "chat"]
    raw_id_fields = ["batch_run", "queue_item"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "bot", "chat", "status", "telegram_message_id", "parts_sent",
                    "batch_run", "created_at", "sent_at"]
    list_filter = ["status", "bot"]
    search_fields = ["text", "error", "chat__title"]
    list_select_related = ["bot", "chat", "batch_run"]
    raw_id_fields = ["queue_item", "batch_run"]


from batchgen.intake import admin as intake_admin  # noqa: E402,F401,I001
