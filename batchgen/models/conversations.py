"""What intake keeps: who is in which chat, what was said there, which updates and triggers
were already handled (the unique keys are what makes intake and the producer idempotent)."""

from __future__ import annotations

from django.db import models

__all__ = ["ChatMessage", "Membership", "ProcessedUpdate", "Trigger"]


class Membership(models.Model):
    """A bot in a chat, with its behaviour rules there."""

    bot = models.ForeignKey("batchgen.Bot", on_delete=models.CASCADE, related_name="memberships")
    chat = models.ForeignKey("batchgen.Chat", on_delete=models.CASCADE,
                             related_name="memberships")
    is_active = models.BooleanField(default=True,
                                    help_text="Off when the bot was removed or blocked here.")
    replies_to_humans = models.BooleanField(
        default=True, help_text="Reply when a person writes here (a mention always gets one).")
    answers_bots = models.BooleanField(default=True,
                                       help_text="May answer another bot's message here.")
    cadence_minutes = models.PositiveIntegerField(
        null=True, blank=True, help_text="Post on its own every N minutes; empty: never.")
    jitter_minutes = models.PositiveIntegerField(
        default=0, help_text="Each cadence post moves by up to ± this many minutes.")
    next_post_at = models.DateTimeField(null=True, blank=True,
                                        help_text="Next cadence post; empty: at the next tick.")
    left_reason = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["chat", "bot"]
        constraints = [models.UniqueConstraint(fields=["bot", "chat"],
                                               name="membership_bot_chat")]

    def __str__(self) -> str:
        return f"{self.bot} in {self.chat}"


class ProcessedUpdate(models.Model):
    """One row per (bot, update_id) received: Telegram redelivers updates, so this is the
    dedup. The webhook and the poller insert it pending, with the raw update; the processor
    (``updates.process_pending``, run by tick) handles it and records the outcome."""

    bot = models.ForeignKey("batchgen.Bot", on_delete=models.CASCADE, related_name="+")
    update_id = models.BigIntegerField()
    outcome = models.CharField(max_length=64, default="")
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(null=True, blank=True, help_text="The update as Telegram sent it.")
    pending = models.BooleanField(default=False, help_text="Received, not processed yet.")
    processed_at = models.DateTimeField(null=True, blank=True)
    note = models.CharField(
        max_length=200, blank=True, default="",
        help_text="What intake changed to keep it (characters replaced), or why it could not.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["bot", "update_id"],
                                               name="processedupdate_bot_update")]
        indexes = [models.Index(fields=["bot", "update_id"], condition=models.Q(pending=True),
                                name="processedupdate_pending")]

    def __str__(self) -> str:
        return f"update {self.update_id} for bot {self.bot_id}: {self.outcome}"


class ChatMessage(models.Model):
    """A message someone else wrote in a chat (a person, or a bot outside the platform).

    The same group message reaches every member bot as its own update, so it is stored once
    per (chat, telegram_message_id). The platform's own sends are the ``Message`` rows.
    """

    chat = models.ForeignKey("batchgen.Chat", on_delete=models.CASCADE,
                             related_name="history")
    telegram_message_id = models.BigIntegerField()
    speaker = models.CharField(max_length=200)
    from_human = models.BooleanField(default=True)
    addressed_bot = models.ForeignKey(
        "batchgen.Bot", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="The bot this message mentions or replies to.")
    text = models.TextField()
    sent_at = models.DateTimeField()
    produced = models.BooleanField(default=False,
                                   help_text="The producer has queued the replies it calls for.")

    class Meta:
        ordering = ["sent_at", "id"]
        constraints = [models.UniqueConstraint(fields=["chat", "telegram_message_id"],
                                               name="chatmessage_chat_message")]
        indexes = [models.Index(fields=["chat", "-sent_at"], name="chatmessage_recent"),
                   models.Index(fields=["produced"], condition=models.Q(produced=False),
                                name="chatmessage_unproduced")]

    def __str__(self) -> str:
        return f"{self.speaker}: {self.text[:60]}"


class Trigger(models.Model):
    """Why a queue item exists. ``key`` is unique, so two producers running at once create
    one item per (bot, chat, trigger): the loser's insert fails and its item is rolled back."""

    key = models.CharField(max_length=200, unique=True)
    bot = models.ForeignKey("batchgen.Bot", on_delete=models.CASCADE, related_name="+")
    chat = models.ForeignKey("batchgen.Chat", on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=16)
    queue_item = models.OneToOneField("batchgen.QueueItem", null=True, on_delete=models.SET_NULL,
                                      related_name="trigger")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.key

