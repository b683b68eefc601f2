"""Bots, chats, admin-editable settings, the work queue, batch runs and the outbox."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import models, transaction
from django.db.models import Q

from batchgen.core.sizes import MAX_BATCH_SIZE  # the LLM layer owns the limit
from batchgen.models.secrets import EncryptedTextField

log = logging.getLogger(__name__)

# A persona is a character sketch, not a document: longer ones crowded the chat and the
# recent messages out of the prompt (see prompts.build_user_prompt's budget).
MAX_PERSONA_CHARS = 4000


class Bot(models.Model):
    name = models.CharField(max_length=100, unique=True)
    # Encrypted at rest (FIELD_ENCRYPTION_KEYS); reads give the plaintext, filters are refused.
    telegram_token = EncryptedTextField(help_text="Never shown back once saved.")
    # A validator, not max_length: the admin shows the error, where a textarea's maxlength
    # attribute would silently drop the end of a pasted persona.
    persona = models.TextField(
        blank=True, default="", help_text=f"At most {MAX_PERSONA_CHARS:,} characters.",
        validators=[MaxLengthValidator(
            MAX_PERSONA_CHARS, message=f"The persona may be at most {MAX_PERSONA_CHARS:,} "
                                       "characters (it has %(show_value)d).")])
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Filled from getMe when the bot is saved: the mention and reply detection needs them.
    username = models.CharField(max_length=64, blank=True, default="",
                                help_text="From Telegram's getMe when the bot is saved.")
    telegram_id = models.BigIntegerField(null=True, blank=True, editable=False)
    system_prompt = models.TextField(
        blank=True, default="",
        help_text="Empty: the platform's default system prompt (BOT_DEFAULT_SYSTEM_PROMPT).")
    # getUpdates' offset, kept here so a restarted poller neither loses nor repeats updates.
    update_offset = models.BigIntegerField(default=0, editable=False)
    # The HMAC of the secret Telegram sends (secrets.webhook_digest); "" when polled.
    webhook_secret = models.CharField(max_length=64, blank=True, default="", editable=False)
    daily_spend_cap_usd = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True,
        help_text="LLM spend a day (UTC) across its chats; empty: the platform default "
                  "(Settings: bot_daily_spend_cap_usd); 0: no cap.")
    cap_reason = models.CharField(max_length=200, blank=True, default="", editable=False,
                                  help_text="Set while a cap binds (batchgen.delivery.caps).")
    # Set by batchgen.work.pauses: its pending work stays queued, unclaimed, until resumed.
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


def _validate_time_zone(value: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"time_zone must be an IANA time zone such as Europe/Berlin, got {value!r}"
        ) from None


class Chat(models.Model):
    class Type(models.TextChoices):
        PRIVATE = "private"
        GROUP = "group"
        SUPERGROUP = "supergroup"
        CHANNEL = "channel"

    telegram_chat_id = models.BigIntegerField(unique=True)
    title = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    chat_type = models.CharField(max_length=16, choices=Type.choices, blank=True, default="")
    is_active = models.BooleanField(
        default=True, help_text="Off when no bot can write here any more (removed, blocked).")
    time_zone = models.CharField(max_length=64, default="UTC", validators=[_validate_time_zone],
                                 help_text="For quiet hours, e.g. Europe/Berlin.")
    quiet_start = models.TimeField(null=True, blank=True,
                                   help_text="No cadence posts or bot-to-bot turns from here…")
    quiet_end = models.TimeField(null=True, blank=True, help_text="…until here (local time).")
    max_bot_turns = models.PositiveIntegerField(
        default=3, help_text="Bot messages in a row without a human before the bots stop.")
    max_messages_per_hour = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Bot messages an hour here, all bots together; empty: the platform default "
                  "(Settings: chat_messages_per_hour); 0: no cap.")
    daily_spend_cap_usd = models.DecimalField(
        max_digits=10, decimal_places=4, null=True, blank=True,
        help_text="LLM spend a day (UTC) for this chat; empty: the platform default "
                  "(Settings: chat_daily_spend_cap_usd); 0: no cap.")
    cap_reason = models.CharField(max_length=200, blank=True, default="", editable=False,
                                  help_text="Set while a cap binds (batchgen.delivery.caps).")
    paused_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["title", "telegram_chat_id"]

    def __str__(self) -> str:
        return self.title or str(self.telegram_chat_id)

    def clean(self) -> None:
        if (self.quiet_start is None) != (self.quiet_end is None):
            missing = "quiet_end" if self.quiet_end is None else "quiet_start"
            raise ValidationError({missing: "quiet hours need both quiet_start and quiet_end, "
                                            "or neither"})
        if self.quiet_start is not None and self.quiet_start == self.quiet_end:
            raise ValidationError({"quiet_end": "quiet_end must differ from quiet_start"})

    @property
    def is_group(self) -> bool:
        # Telegram gives groups and channels negative ids, private chats positive.
        return self.telegram_chat_id < 0

    def bot_left(self, bot: Bot, reason: str) -> None:
        """``bot`` can no longer write here (removed, kicked, blocked): nothing more is
        queued for it. A chat no active bot is left in is deactivated too."""
        from batchgen.models.conversations import Membership

        Membership.objects.update_or_create(
            bot=bot, chat=self, defaults={"is_active": False, "left_reason": reason[:200]})
        if not Membership.objects.filter(chat=self, is_active=True).exists():
            Chat.objects.filter(id=self.id).update(is_active=False)
            self.is_active = False
        log.info("bot %s left chat %s: %s", bot.id, self.id, reason)

    def migrate_to(self, new_id: int) -> Chat:
        """The group became a supergroup with ``new_id`` (a 400 with ``migrate_to_chat_id``).

        Returns the chat to send to from now on. When the supergroup is already known (its
        updates arrived first), this chat's members and history move there.
        """
        from batchgen.models.conversations import ChatMessage, Membership

        with transaction.atomic():
            target = Chat.objects.select_for_update().filter(telegram_chat_id=new_id).first()
            if target is None:
                Chat.objects.filter(id=self.id).update(telegram_chat_id=new_id,
                                                       chat_type=Chat.Type.SUPERGROUP)
                self.refresh_from_db()
                return self
            for membership in Membership.objects.filter(chat=self):
                Membership.objects.get_or_create(
                    bot_id=membership.bot_id, chat=target,
                    defaults={"is_active": membership.is_active,
                              "replies_to_humans": membership.replies_to_humans,
                              "cadence_minutes": membership.cadence_minutes})
            ChatMessage.objects.filter(chat=self).exclude(
                telegram_message_id__in=ChatMessage.objects.filter(chat=target)
                .values("telegram_message_id")).update(chat=target)
            Message.objects.filter(chat=self).update(chat=target)
            Membership.objects.filter(chat=self).update(is_active=False,
                                                        left_reason=f"migrated to {new_id}")
            Chat.objects.filter(id=self.id).update(is_active=False)
        return target


def _validate_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValidationError("must be a boolean: true or false")


def _validate_batch_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"must be an integer from 1 to {MAX_BATCH_SIZE}")
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise ValidationError(f"must be an integer from 1 to {MAX_BATCH_SIZE}, got {value}")
    return value


BATCH_ROUTE_PROVIDERS = ("openai", "groq", "gemini")


def _validate_providers(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        raise ValidationError(f"must be a list of provider names from "
                              f"{', '.join(BATCH_ROUTE_PROVIDERS)}, e.g. [\"openai\"]")
    unknown = sorted(set(value) - set(BATCH_ROUTE_PROVIDERS))
    if unknown:
        raise ValidationError(f"must name only {', '.join(BATCH_ROUTE_PROVIDERS)}; "
                              f"unknown: {', '.join(unknown)}")
    return sorted(set(value))


def _validate_count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationError("must be a whole number, 0 or more (0: no cap)")
    return value


def _validate_usd(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
        raise ValidationError("must be a number of US dollars, 0 or more (0: no cap)")
    return float(value)


@dataclass(frozen=True)
class BatchSettings:
    batch_mode_enabled: bool = False
    batch_size: int = 1
    batch_route_providers: list[str] = field(default_factory=list)
    chat_messages_per_hour: int = 0
    chat_daily_spend_cap_usd: float = 0.0
    bot_daily_spend_cap_usd: float = 0.0
    paused_providers: list[str] = field(default_factory=list)

    @property
    def claim_size(self) -> int:
        return self.batch_size if self.batch_mode_enabled else 1


class Setting(models.Model):
    """One admin-editable value; ``Setting.load()`` is read afresh on every tick."""

    RULES = {"batch_mode_enabled": _validate_bool, "batch_size": _validate_batch_size,
             "batch_route_providers": _validate_providers, "paused_providers": _validate_providers,
             "chat_messages_per_hour": _validate_count,
             "chat_daily_spend_cap_usd": _validate_usd, "bot_daily_spend_cap_usd": _validate_usd}
    DEFAULTS = {"batch_mode_enabled": False, "batch_size": 1, "batch_route_providers": [],
                "paused_providers": [], "chat_messages_per_hour": 0,
                "chat_daily_spend_cap_usd": 0.0, "bot_daily_spend_cap_usd": 0.0}
    HELP = {
        "batch_mode_enabled": "true: each run keeps batch_size prompts in flight at once, "
                              "claiming the next item as each reply finishes. false: one item "
                              "at a time through LLMClient, one after another while the queue "
                              "has work.",
        "batch_size": f"How many prompts a run keeps in flight in batch mode "
                      f"(1 to {MAX_BATCH_SIZE}). It is not a cap on how many items a run "
                      f"handles: a run refills until the queue is empty or its bound is hit.",
        "batch_route_providers": "Providers whose Batch API (half price, results later) takes "
                                 "work that can wait, e.g. [\"openai\"]; [] sends everything "
                                 "synchronously.",
        "paused_providers": "Providers paused by an operator, e.g. [\"openai\"]: while "
                            "LLM_PROVIDER is paused no item is claimed; its work waits, "
                            "shown as paused, and resumes when it is taken off the list.",
        "chat_messages_per_hour": "Default cap on bot messages an hour in one chat, all bots "
                                  "together (a chat may set its own); 0: no cap.",
        "chat_daily_spend_cap_usd": "Default LLM spend cap a day (UTC) per chat; 0: no cap.",
        "bot_daily_spend_cap_usd": "Default LLM spend cap a day (UTC) per bot; 0: no cap.",
    }

    key = models.CharField(max_length=64, unique=True,
                           choices=[(key, key) for key in RULES],
                           help_text=" ".join(f"{k}: {v}" for k, v in HELP.items()))
    value = models.JSONField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}"

    def clean(self) -> None:
        rule = self.RULES.get(self.key)
        if rule is None:
            raise ValidationError(
                {"key": f"unknown setting {self.key!r}; known: {', '.join(self.RULES)}"})
        try:
            self.value = rule(self.value)
        except ValidationError as exc:
            raise ValidationError({"value": f"{self.key} {exc.messages[0]}"}) from None

    @classmethod
    def ensure_defaults(cls) -> None:
        """Create any known setting that has no row (deleted, or a fresh database)."""
        for key, value in cls.DEFAULTS.items():
            cls.objects.get_or_create(key=key, defaults={"value": value})

    @classmethod
    def load(cls) -> BatchSettings:
        """Current settings; rows missing or invalid fall back to the defaults."""
        values: dict[str, Any] = dict(cls.DEFAULTS)
        for key, value in cls.objects.values_list("key", "value"):
            rule = cls.RULES.get(key)
            if rule is None:
                continue
            try:
                values[key] = rule(value)
            except ValidationError:
                continue
        return BatchSettings(**values)


class QueueItem(models.Model):
    """'Bot B should say something in chat C'. State changes live in batchgen.work.queue."""

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        DONE = "done"
        DEAD = "dead"
        # Submitted to a provider's Batch API; tick polls it (batchgen.delivery.batch_route).
        BATCHED = "batched"

    # SET_NULL, not CASCADE: deleting a bot or chat must not silently delete
    # its queued work; the item ends dead with the reason instead.
    bot = models.ForeignKey(Bot, null=True, on_delete=models.SET_NULL, related_name="queue_items")
    chat = models.ForeignKey(Chat, null=True, on_delete=models.SET_NULL, related_name="queue_items")
    priority = models.IntegerField(default=0, help_text="Higher goes first.")
    recent_messages = models.JSONField(default=list, blank=True,
                                       help_text="Recent chat lines, oldest first, for context.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(
        default=0, help_text="Real tries: generations and sends that ran, not lease expiries.")
    max_attempts = models.PositiveIntegerField(default=3)
    crashes = models.PositiveIntegerField(
        default=0, help_text="Times a worker stopped while holding it (its lease expired).")
    available_at = models.DateTimeField(null=True, blank=True,
                                        help_text="Not claimed before this time (back-off).")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    batch_run = models.ForeignKey("BatchRun", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="items")
    deliver_by = models.DateTimeField(
        null=True, blank=True,
        help_text="Latest time the message should go out; empty: urgent (a reply to a person).")
    provider_batch = models.ForeignKey(
        "ProviderBatch", null=True, blank=True, on_delete=models.SET_NULL, related_name="items",
        help_text="The provider batch it was last submitted in.")
    last_error = models.TextField(blank=True, default="")
    # What an operator did to it (a requeue keeps the reason it had died with), oldest first:
    # [{"at": iso time, "event": "requeued", "by": username, "status", "attempts", "reason"}].
    history = models.JSONField(default=list, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-priority", "created_at", "id"]
        indexes = [
            # Serves the claim: highest priority pending first, oldest first.
            models.Index(fields=["-priority", "created_at", "id"],
                         condition=Q(status="pending"), name="queueitem_pending_order"),
            models.Index(fields=["status", "lease_expires_at"], name="queueitem_status_lease"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.bot or '(no bot)'} → {self.chat or '(no chat)'} [{self.status}]"


class PostingSlot(models.Model):
    """When a bot may next post in a chat, as the claim reserves it (batchgen.work.queue).

    Telegram counts per bot and chat, so the chat is the unit of capacity: an item is claimed
    only when its bot's slot in its chat is within the claim horizon, and the claim moves
    the slot on by one posting interval. Replies are then generated just in time."""

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="+")
    chat = models.ForeignKey(Chat, on_delete=models.CASCADE, related_name="+")
    next_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot", "chat"],
                                               name="one_posting_slot_per_bot_and_chat")]

    def __str__(self) -> str:
        return f"bot {self.bot_id} in chat {self.chat_id} from {self.next_at:%H:%M:%S}"


class BatchRun(models.Model):
    class Mode(models.TextChoices):
        SINGLE = "single"
        BATCH = "batch"
        MULTI_BOT = "multi_bot"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        PARTIAL = "partial"
        FAILED = "failed"

    mode = models.CharField(max_length=16, choices=Mode.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    size = models.PositiveIntegerField(default=0,
                                       help_text="Items the run claimed, refills included.")
    workers = models.PositiveIntegerField(default=0, help_text="Prompts it kept in flight.")
    provider = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    rq_job_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True,
                                        help_text="Last time the run renewed its leases.")
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_s = models.FloatField(null=True, blank=True)
    generation_s = models.FloatField(null=True, blank=True)
    successes = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    throughput = models.FloatField(null=True, blank=True, help_text="Messages per second.")
    latency_mean_s = models.FloatField(null=True, blank=True)
    latency_p95_s = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True,
                                   help_text="Empty when the model has no known price.")
    error_summary = models.JSONField(default=dict, blank=True,
                                     help_text="Failure count per error kind.")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at"], name="batchrun_created")]

    def __str__(self) -> str:
        return f"Batch #{self.pk} ({self.mode}, {self.size} items, {self.status})"


class ProviderBatch(models.Model):
    """One job on a provider's Batch API (half price, results later), polled by tick."""

    class Status(models.TextChoices):
        OPEN = "open"            # submitted; results not taken yet
        DONE = "done"            # results stored; items not in it went back to the queue
        FAILED = "failed"        # the provider failed or expired it; items went back
        CANCELLED = "cancelled"  # cancelled; items went back

    provider = models.CharField(max_length=32)
    model = models.CharField(max_length=100, blank=True, default="")
    external_id = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    provider_status = models.CharField(max_length=32, blank=True, default="")
    size = models.PositiveIntegerField(default=0)
    # item id -> {"prompt", "system"}: what was sent, so the stored reply names its prompt.
    requests = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    submitted_at = models.DateTimeField(auto_now_add=True)
    polled_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Provider batch #{self.pk} {self.provider} {self.external_id} [{self.status}]"


class Message(models.Model):
    """The outbox: committed as ``sending`` before Telegram is called, so a crash
    mid-send is visible and never turns into an automatic second send."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        SEND_UNKNOWN = "send_unknown"
        FAILED = "failed"

    queue_item = models.OneToOneField(QueueItem, on_delete=models.PROTECT, related_name="message")
    bot = models.ForeignKey(Bot, null=True, on_delete=models.SET_NULL, related_name="messages")
    chat = models.ForeignKey(Chat, null=True, on_delete=models.SET_NULL, related_name="messages")
    batch_run = models.ForeignKey(BatchRun, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="messages")
    prompt = models.TextField(blank=True, default="")
    text = models.TextField(help_text="What goes out: the reply, cut to TELEGRAM_MAX_PARTS.")
    cut_chars = models.PositiveIntegerField(
        default=0, help_text="Characters of the reply left out to fit TELEGRAM_MAX_PARTS.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    parts_sent = models.PositiveIntegerField(default=0)
    telegram_message_id = models.BigIntegerField(null=True, blank=True)
    telegram_message_ids = models.JSONField(default=list, blank=True)
    provider = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Message #{self.pk} to {self.chat or '(no chat)'} [{self.status}]"


class Generation(models.Model):
    """What the generator did for one item in one batch run (kept for failures too)."""

    batch_run = models.ForeignKey(BatchRun, on_delete=models.CASCADE, related_name="generations")
    queue_item = models.ForeignKey(QueueItem, null=True, on_delete=models.SET_NULL,
                                   related_name="generations")
    bot = models.ForeignKey(Bot, null=True, on_delete=models.SET_NULL, related_name="+")
    chat = models.ForeignKey(Chat, null=True, on_delete=models.SET_NULL, related_name="+")
    prompt = models.TextField(blank=True, default="")
    text = models.TextField(blank=True, default="")
    ok = models.BooleanField(default=False)
    error_kind = models.CharField(max_length=32, blank=True, default="")
    error = models.TextField(blank=True, default="")
    latency_s = models.FloatField(null=True, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    provider = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    route = models.CharField(
        max_length=8, default="sync", choices=[("sync", "sync"), ("batch", "batch")],
        help_text="sync: one request per prompt; batch: a provider Batch API job (cheaper, later).")
    persona_cut = models.PositiveIntegerField(
        default=0, help_text="Characters of the persona left out to fit the prompt.")
    messages_dropped = models.PositiveIntegerField(
        default=0, help_text="Oldest recent messages left out to fit the prompt.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        outcome = "ok" if self.ok else (self.error_kind or "failed")
        return f"Generation #{self.pk} for item {self.queue_item_id} [{outcome}]"



class ChatBehaviour(Chat):
    """The chat seen as its behaviour rules (an admin page of its own, same table)."""

    class Meta:
        proxy = True
        verbose_name = "chat behaviour rules"
        verbose_name_plural = "chat behaviour rules"


# Intake's models live in their package and reference these by "batchgen.Model" strings, so
# the import goes one way only: this module is the app's, and Django finds them through it.
from batchgen.models.conversations import *  # noqa: E402,F401,F403,I001
