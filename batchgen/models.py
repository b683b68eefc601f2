"""Bots, chats, admin-editable settings, the work queue, batch runs and the outbox."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from batchgen.llm.limits import MAX_BATCH_SIZE  # the LLM layer owns the limit


class Bot(models.Model):
    name = models.CharField(max_length=100, unique=True)
    telegram_token = models.CharField(max_length=200, help_text="Never shown back once saved.")
    persona = models.TextField(blank=True, default="")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Chat(models.Model):
    telegram_chat_id = models.BigIntegerField(unique=True)
    title = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["title", "telegram_chat_id"]

    def __str__(self) -> str:
        return self.title or str(self.telegram_chat_id)

    @property
    def is_group(self) -> bool:
        # Telegram gives groups and channels negative ids, private chats positive.
        return self.telegram_chat_id < 0


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


@dataclass(frozen=True)
class BatchSettings:
    batch_mode_enabled: bool = False
    batch_size: int = 1

    @property
    def claim_size(self) -> int:
        return self.batch_size if self.batch_mode_enabled else 1


class Setting(models.Model):
    """One admin-editable value; ``Setting.load()`` is read afresh on every tick."""

    RULES = {"batch_mode_enabled": _validate_bool, "batch_size": _validate_batch_size}
    DEFAULTS = {"batch_mode_enabled": False, "batch_size": 1}

    key = models.CharField(max_length=64, unique=True,
                           choices=[(key, key) for key in RULES])
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
        values = dict(cls.DEFAULTS)
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
    """'Bot B should say something in chat C'. State changes live in batchgen.queue."""

    class Status(models.TextChoices):
        PENDING = "pending"
        CLAIMED = "claimed"
        DONE = "done"
        DEAD = "dead"

    # SET_NULL, not CASCADE: deleting a bot or chat must not silently delete
    # its queued work; the item ends dead with the reason instead.
    bot = models.ForeignKey(Bot, null=True, on_delete=models.SET_NULL, related_name="queue_items")
    chat = models.ForeignKey(Chat, null=True, on_delete=models.SET_NULL, related_name="queue_items")
    priority = models.IntegerField(default=0, help_text="Higher goes first.")
    recent_messages = models.JSONField(default=list, blank=True,
                                       help_text="Recent chat lines, oldest first, for context.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=3)
    available_at = models.DateTimeField(null=True, blank=True,
                                        help_text="Not claimed before this time (back-off).")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    batch_run = models.ForeignKey("BatchRun", null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="items")
    last_error = models.TextField(blank=True, default="")
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
    size = models.PositiveIntegerField(default=0)
    workers = models.PositiveIntegerField(default=0)
    provider = models.CharField(max_length=32, blank=True, default="")
    model = models.CharField(max_length=100, blank=True, default="")
    rq_job_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
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
    text = models.TextField()
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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        outcome = "ok" if self.ok else (self.error_kind or "failed")
        return f"Generation #{self.pk} for item {self.queue_item_id} [{outcome}]"
