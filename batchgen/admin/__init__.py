"""Admin for every model: Setting values are validated per key, bot tokens are write-only, and
the records the platform derives (batch runs, generations, messages) have no "Add", since a
hand-made one would be a figure nobody measured. An entry point: may import every layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.db.models import Exists, Model, OuterRef, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html_join
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from batchgen.admin.protected import ProtectedAdmin
from batchgen.core.bot_tokens import token_problem
from batchgen.core.json_input import JsonRefused, NotJson, parse
from batchgen.dashboard import console, failures, run_detail, search
from batchgen.models import (
    BatchRun,
    Bot,
    Chat,
    Generation,
    Message,
    ProviderBatch,
    QueueItem,
    Setting,
)
from batchgen.templatetags.dashboard_format import local_time, usd
from batchgen.work import operator, queue

admin.site.site_header = "botplatform administration"
admin.site.site_title = "botplatform admin"
admin.site.index_title = "Bots, queue and batches"
# The app list is one click away on every page (breadcrumbs); without the sidebar the
# changelists get the width their columns need at 1280 px.
admin.site.enable_nav_sidebar = False
# django-rq's app has no verbose name, so its header read "DJANGO_RQ".
apps.get_app_config("django_rq").verbose_name = "Job queues (RQ)"


def time_column(field_name: str, description: str = "") -> Callable[[Any, Model], str]:
    """A list column showing ``field_name`` in the dashboard's one time format."""

    @admin.display(description=description or field_name.replace("_", " "),
                   ordering=field_name)
    def column(self: Any, obj: Model) -> str:
        return local_time(getattr(obj, field_name))

    return column


@admin.display(description="batch", ordering="batch_run")
def batch(obj: QueueItem | Generation | Message) -> str:
    # "#12", not BatchRun.__str__'s sentence: a list column must stay narrow.
    return f"#{obj.batch_run_id}" if obj.batch_run_id else "—"


class DerivedAdmin(ProtectedAdmin):
    """Records the pipeline writes: never added by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="provider · model", ordering="provider")
    def provider_model(self, obj: BatchRun | Generation | Message) -> str:
        return " · ".join(part for part in (obj.provider, obj.model) if part) or "—"


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
        fields = ["name", "telegram_token", "persona", "system_prompt", "is_active",
                  "daily_spend_cap_usd"]

    def clean_telegram_token(self) -> str:
        token = self.cleaned_data["telegram_token"]
        if token:
            # Checked before getMe: the token goes into the request's URL.
            if problem := token_problem(token):
                raise forms.ValidationError(f"telegram_token {problem}")
            return token
        if self.instance.pk:
            return Bot.objects.only("telegram_token").get(pk=self.instance.pk).telegram_token
        raise forms.ValidationError("telegram_token is required for a new bot")

    def clean(self) -> dict[str, Any]:
        """Saving calls getMe: a wrong token is refused with Telegram's reason."""
        from batchgen.conversations.setup import check_token
        from batchgen.telegram.bot_api import BotApiError

        cleaned = super().clean()
        assert cleaned is not None  # ModelForm.clean returns cleaned_data
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


class PausableAdmin(ProtectedAdmin):
    """Pause and resume: the work of a paused bot or chat waits in the queue, unclaimed."""

    @admin.display(description="paused", ordering="paused_at")
    def paused(self, obj: Bot | Chat) -> str:
        return f"since {local_time(obj.paused_at)}" if obj.paused_at else "—"

    @admin.action(description="Pause: their queued work waits, unclaimed")
    def pause(self, request: HttpRequest, targets: QuerySet) -> None:
        count = operator.pause(targets)
        messages.success(request, f"Paused {count}; their pending work is not claimed.")

    @admin.action(description="Resume: their queued work is claimed again")
    def resume(self, request: HttpRequest, targets: QuerySet) -> None:
        messages.success(request, f"Resumed {operator.resume(targets)}.")


@admin.register(Bot)
class BotAdmin(PausableAdmin):
    form = BotForm
    list_display = ["name", "username", "is_active", "paused", "persona_excerpt", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "username", "persona"]
    readonly_fields = ["username", "cap_reason"]
    actions = ["use_webhook", "use_polling", "pause", "resume"]

    @admin.action(description="Receive updates by webhook (setWebhook)")
    def use_webhook(self, request: HttpRequest, bots) -> None:
        from batchgen.conversations.setup import switch_delivery

        for bot in bots:
            self._report(request, bot, switch_delivery, bot, webhook=True)

    @admin.action(description="Receive updates with telegram_poll (deleteWebhook)")
    def use_polling(self, request: HttpRequest, bots) -> None:
        from batchgen.conversations.setup import switch_delivery

        for bot in bots:
            self._report(request, bot, switch_delivery, bot, webhook=False)

    def _report(self, request: HttpRequest, bot: Bot, action, *args, **kwargs) -> None:
        from batchgen.telegram.bot_api import BotApiError

        try:
            messages.success(request, f"{bot}: {action(*args, **kwargs)}")
        except (BotApiError, ValueError) as exc:
            messages.error(request, f"{bot}: {exc}")

    @admin.display(description="persona")
    def persona_excerpt(self, bot: Bot) -> str:
        return bot.persona[:80]


@admin.register(Chat)
class ChatAdmin(PausableAdmin):
    list_display = ["title", "telegram_chat_id", "paused", "cap_reason", "created_at"]
    readonly_fields = ["cap_reason"]
    search_fields = ["title", "telegram_chat_id"]
    actions = ["all_bots_reply", "pause", "resume"]

    @admin.action(description="Every active bot replies here, in one batch")
    def all_bots_reply(self, request: HttpRequest, chats) -> None:
        from batchgen.delivery.scheduler import generate_for_multiple_bots
        from batchgen.models import MAX_BATCH_SIZE

        bot_ids = list(Bot.objects.filter(is_active=True).values_list("id", flat=True))
        for chat in chats:
            try:
                run = generate_for_multiple_bots(bot_ids[:MAX_BATCH_SIZE], chat.id)
            except ValueError as exc:
                messages.error(request, f"{chat}: {exc}")
            else:
                messages.success(request, f"{chat}: batch {run.id} queued with {run.size} bots.")


# A setting is a flag, a number or a short list: anything larger or deeper is not one, and a
# value nested thousands deep made the parser overflow its stack (a 500).
SETTING_MAX_CHARS = 10_000
SETTING_MAX_DEPTH = 16


class SettingForm(forms.ModelForm):
    value = forms.CharField(help_text="JSON: true / false for batch_mode_enabled, "
                                      "an integer 1..50 for batch_size, a list such as "
                                      "[\"openai\"] for batch_route_providers.")

    class Meta:
        model = Setting
        fields = ["key", "value"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._saved_value = self.instance.value if self.instance.pk else None
        if self.instance.pk:
            self.initial["value"] = json.dumps(self.instance.value)
            # What the value means, in plain words, on the page where it is changed.
            meaning = Setting.HELP.get(self.instance.key, "")
            self.fields["value"].help_text = f"{meaning} {self.fields['value'].help_text}"

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]  # private: django-stubs omits it
        if self.errors and self.instance.pk:
            # Validation copied the rejected value onto the instance, and the page
            # title and breadcrumbs are drawn from it: show what is saved instead.
            self.instance.value = self._saved_value

    def clean_value(self) -> object:
        raw = self.cleaned_data["value"].strip()
        try:
            return parse(raw, max_bytes=SETTING_MAX_CHARS, max_depth=SETTING_MAX_DEPTH)
        except NotJson:
            # Bare words such as maybe are kept as strings so the per-key rule names them.
            return raw
        except JsonRefused as exc:
            raise forms.ValidationError(f"value {exc}") from None


def _safe_next(request: HttpRequest) -> str:
    """The form's ``next`` if it stays on this site, else "" (no open redirect)."""
    target = request.POST.get("next", "")
    allowed = url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                              require_https=request.is_secure())
    return target if allowed else ""


@admin.register(Setting)
class SettingAdmin(ProtectedAdmin):
    form = SettingForm
    list_display = ["key", "shown_value", "updated"]
    change_list_template = "admin/batchgen/setting/change_list.html"
    updated = time_column("updated_at", "updated")

    @admin.display(description="value", ordering="value")
    def shown_value(self, setting: Setting) -> str:
        # JSON, as the form takes it: "true", never Python's "True".
        return json.dumps(setting.value)

    def render_change_form(self, request: HttpRequest, context: dict[str, Any],
                           add: bool = False, change: bool = False, form_url: str = "",
                           obj: Setting | None = None) -> HttpResponse:
        if obj is not None:
            context["subtitle"] = f"{obj.key} = {json.dumps(obj.value)}"
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list:
        toggle = self.admin_site.admin_view(require_POST(self.toggle_batch_mode))
        provider = self.admin_site.admin_view(require_POST(self.pause_provider))
        return [path("toggle-batch-mode/", toggle, name="batchgen_setting_toggle"),
                path("provider-pause/", provider, name="batchgen_setting_provider_pause"),
                *super().get_urls()]

    def pause_provider(self, request: HttpRequest) -> HttpResponseRedirect:
        """Pause or resume (``action``) a ``provider``, as the dashboard does: a resume
        wakes the tick loops."""
        if not self.has_change_permission(request):
            messages.error(request, "You may not change settings.")
        else:
            params = {"kind": "provider", "target": request.POST.get("provider", "")}
            try:
                messages.success(request, console.set_paused(
                    params, request.POST.get("action") != "resume"))
            except console.ActionError as exc:
                messages.error(request, f"Nothing changed: {exc}.")
        return HttpResponseRedirect(reverse("admin:batchgen_setting_changelist"))

    def toggle_batch_mode(self, request: HttpRequest) -> HttpResponseRedirect:
        """One click for staff: flip batch_mode_enabled (POST with CSRF)."""
        if not self.has_change_permission(request):
            messages.error(request, "You may not change settings.")
        else:
            enabled = not Setting.load().batch_mode_enabled
            Setting.objects.update_or_create(key="batch_mode_enabled",
                                             defaults={"value": enabled})
            messages.success(request, f"Batch mode is now {'on' if enabled else 'off'}.")
        return HttpResponseRedirect(_safe_next(request)
                                    or reverse("admin:batchgen_setting_changelist"))

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        Setting.ensure_defaults()  # every known setting is always listed, ready to edit
        extra_context = {**(extra_context or {}), "batch_settings": Setting.load(),
                         "providers": operator.PROVIDERS,
                         "effective": console.effective_setting()}
        return super().changelist_view(request, extra_context)


class QueueItemAddForm(forms.ModelForm):
    """What a person decides; the queue sets everything else."""

    class Meta:
        model = QueueItem
        fields = ["bot", "chat", "priority"]


class CauseFilter(admin.SimpleListFilter):
    """Why a dead item died, as the dashboard's failures table groups it."""

    title = "cause"
    parameter_name = "cause"
    field = "cause"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(kind, kind) for kind in failures.CAUSES]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value is None:
            return queryset
        return failures.with_cause(queryset).filter(**{self.field: value})


class CauseProviderFilter(CauseFilter):
    title = "provider of the last try"
    parameter_name = "cause_provider"
    field = "cause_provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(name, name) for name in operator.PROVIDERS]


class PausedFilter(admin.SimpleListFilter):
    """Pending work held back by a paused bot, chat or provider (QueueItemAdmin annotates)."""

    title = "paused"
    parameter_name = "paused"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "paused"), ("no", "not paused")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() not in ("yes", "no"):
            return queryset
        return queryset.filter(is_paused=self.value() == "yes")


@admin.register(QueueItem)
class QueueItemAdmin(ProtectedAdmin):
    # "lease expires" made way for the error (it is on the item's page): the list must fit
    # 1280 px beside the filters.
    list_display = ["id", "bot", "chat", "priority", "state", "attempts", "error", "available",
                    batch, "created"]
    # Bots and chats number in thousands, too many for a sidebar (docs/design.md, "The
    # dashboard and the admin"): search finds them by name instead.
    list_filter = ["status", PausedFilter, CauseFilter, CauseProviderFilter]
    search_fields = ["bot__name", "chat__title", "last_error"]
    search_help_text = ("A chat (title or Telegram id), a bot, an item id, or text in a "
                        "prompt, a reply or the error.")
    actions = ["requeue"]
    list_select_related = ["bot", "chat", "batch_run"]
    autocomplete_fields = ["bot", "chat"]
    person_fields = ["bot", "chat", "priority"]
    system_fields = ["status", "attempts", "max_attempts", "available_at", "lease_expires_at",
                     "batch_run", "last_error", "history", "recent_messages", "created_at",
                     "updated_at", "finished_at"]
    available = time_column("available_at", "available")
    lease_expires = time_column("lease_expires_at", "lease expires")
    created = time_column("created_at", "created")

    def get_form(self, request: HttpRequest, obj: QueueItem | None = None,
                 change: bool = False, **kwargs: Any) -> type[forms.ModelForm]:
        if obj is None:
            kwargs["form"] = QueueItemAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest,
                   obj: QueueItem | None = None) -> tuple[str, ...]:
        if obj is None:
            return tuple(self.person_fields)
        return (*self.person_fields, *self.system_fields)

    def get_readonly_fields(self, request: HttpRequest,
                            obj: QueueItem | None = None) -> list[str]:
        # State changes belong to batchgen.work.queue; editing them here would race it.
        return [] if obj is None else list(self.system_fields)

    def get_queryset(self, request: HttpRequest) -> QuerySet[QueueItem]:
        paused = queue.paused_items().filter(pk=OuterRef("pk"))
        return super().get_queryset(request).annotate(is_paused=Exists(paused))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet,
                           search_term: str) -> tuple[QuerySet, bool]:
        return search.items(queryset, search_term), False

    @admin.display(description="status", ordering="status")
    def state(self, item: QueueItem) -> str:
        return "paused" if getattr(item, "is_paused", False) else item.status

    @admin.display(description="error", ordering="last_error")
    def error(self, item: QueueItem) -> str:
        text = " ".join(item.last_error.split())
        return text if len(text) <= 120 else text[:119] + "…"

    @admin.action(description="Requeue the dead ones (attempts reset, reason kept in history)")
    def requeue(self, request: HttpRequest, items: QuerySet[QueueItem]) -> None:
        result = operator.requeue(items, by=request.user.get_username())
        level = messages.WARNING if result.skipped else messages.SUCCESS
        self.message_user(request, result.summary(), level)


@admin.register(BatchRun)
class BatchRunAdmin(DerivedAdmin):
    list_display = ["id", "created", "mode", "status", "size", "ok", "failed", "seconds",
                    "cost", "provider_model"]
    list_filter = ["mode", "status", "provider"]
    search_fields = ["id", "model", "rq_job_id"]
    date_hierarchy = "created_at"
    readonly_fields = ["links"]
    created = time_column("created_at", "created")

    @admin.display(description="cost $", ordering="cost_usd")
    def cost(self, run: BatchRun) -> str:
        return usd(run.cost_usd)

    @admin.display(description="ok", ordering="successes")
    def ok(self, run: BatchRun) -> int:
        return run.successes

    @admin.display(description="failed", ordering="failures")
    def failed(self, run: BatchRun) -> int:
        return run.failures

    @admin.display(description="s", ordering="duration_s")
    def seconds(self, run: BatchRun) -> str:
        return "—" if run.duration_s is None else f"{run.duration_s:.2f}"

    @admin.display(description="see also")
    def links(self, run: BatchRun) -> str:
        labels = {"items": "queue items", "messages": "messages", "rq_job": "RQ job"}
        found = run_detail.run_links(run)
        found["dashboard"] = reverse("dashboard:batch_detail", args=[run.pk])
        labels["dashboard"] = "dashboard page"
        return format_html_join(" · ", '<a href="{}">{}</a>',
                                ((url, labels[name]) for name, url in found.items()))

    def has_change_permission(self, request: HttpRequest, obj: BatchRun | None = None) -> bool:
        return False  # figures measured by the pipeline: view only


@admin.register(Generation)
class GenerationAdmin(DerivedAdmin):
    list_display = ["id", batch, "bot", "chat", "ok", "error_kind", "latency",
                    "tokens", "provider_model"]
    list_filter = ["ok", "error_kind", "provider"]
    search_fields = ["text", "error", "prompt"]
    list_select_related = ["batch_run", "bot", "chat"]
    raw_id_fields = ["batch_run", "queue_item"]

    @admin.display(description="latency s", ordering="latency_s")
    def latency(self, generation: Generation) -> str:
        return "—" if generation.latency_s is None else f"{generation.latency_s:.2f}"

    @admin.display(description="tokens in / out")
    def tokens(self, generation: Generation) -> str:
        return f"{generation.prompt_tokens} / {generation.completion_tokens}"

    def has_change_permission(self, request: HttpRequest,
                              obj: Generation | None = None) -> bool:
        return False  # a record of what the provider returned: view only


@admin.register(Message)
class MessageAdmin(DerivedAdmin):
    list_display = ["id", "bot", "chat", "status", "tg_id", "parts", batch, "created", "sent"]
    list_filter = ["status"]  # not "bot": see QueueItemAdmin
    search_fields = ["text", "error", "bot__name", "chat__title"]
    list_select_related = ["bot", "chat", "batch_run"]
    raw_id_fields = ["queue_item", "batch_run"]
    created = time_column("created_at", "created")
    sent = time_column("sent_at", "sent")

    @admin.display(description="telegram id", ordering="telegram_message_id")
    def tg_id(self, message: Message) -> str:
        return "—" if message.telegram_message_id is None else str(message.telegram_message_id)

    @admin.display(description="parts", ordering="parts_sent")
    def parts(self, message: Message) -> int:
        return message.parts_sent


@admin.register(ProviderBatch)
class ProviderBatchAdmin(DerivedAdmin):
    """Jobs on a provider's Batch API; the batch route opens and closes them."""

    list_display = ["id", "provider_model", "external_id", "status", "provider_status", "size",
                    "submitted", "finished"]
    list_filter = ["status", "provider"]
    search_fields = ["external_id"]
    exclude = ["requests"]  # every prompt of the batch: too large for a page
    submitted = time_column("submitted_at", "submitted")
    finished = time_column("finished_at", "finished")

    def has_change_permission(self, request: HttpRequest,
                              obj: ProviderBatch | None = None) -> bool:
        return False  # a record of what was sent to the provider: view only


from batchgen.admin import conversations as intake_admin  # noqa: E402,F401,I001
