"""Admin for intake: memberships and behaviour rules, the heard history, the prompt preview."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html

from batchgen.admin.protected import ProtectedAdmin
from batchgen.conversations.prompting import prompt_for
from batchgen.models import ChatBehaviour
from batchgen.models.conversations import ChatMessage, Membership, Trigger

_MEMBER_RULES = ["is_active", "replies_to_humans", "answers_bots", "cadence_minutes",
                 "jitter_minutes"]


class MembershipInline(admin.TabularInline):
    model = Membership
    fields = ["bot", *_MEMBER_RULES, "next_post_at", "left_reason"]
    readonly_fields = ["left_reason"]
    extra = 0


@admin.register(ChatBehaviour)
class ChatBehaviourAdmin(ProtectedAdmin):
    list_display = ["__str__", "chat_type", "is_active", "time_zone", "quiet_start",
                    "quiet_end", "max_bot_turns"]
    list_filter = ["is_active", "chat_type"]
    search_fields = ["title", "telegram_chat_id"]
    fields = ["title", "telegram_chat_id", "chat_type", "is_active", "time_zone",
              "quiet_start", "quiet_end", "max_bot_turns", "max_messages_per_hour",
              "daily_spend_cap_usd", "cap_reason"]
    readonly_fields = ["telegram_chat_id", "chat_type", "cap_reason"]
    inlines = [MembershipInline]

    def has_add_permission(self, request) -> bool:
        return False  # chats are discovered from Telegram, never typed in


@admin.register(Membership)
class MembershipAdmin(ProtectedAdmin):
    list_display = ["__str__", *_MEMBER_RULES, "next_post_at"]
    list_editable = _MEMBER_RULES
    list_filter = ["is_active", "chat", "bot"]
    list_select_related = ["bot", "chat"]
    fields = ["bot", "chat", *_MEMBER_RULES, "next_post_at", "left_reason", "prompt_preview"]
    readonly_fields = ["left_reason", "prompt_preview"]

    @admin.display(description="prompt right now")
    def prompt_preview(self, membership: Membership) -> str:
        if membership.pk is None:
            return "Save first to see the prompt."
        system, user = prompt_for(membership.bot, membership.chat)
        return format_html('<div class="prompt-preview"><h4>System prompt</h4>'
                           '<pre class="system-prompt">{}</pre><h4>User prompt</h4>'
                           '<pre class="user-prompt">{}</pre></div>', system, user)


@admin.register(ChatMessage)
class ChatMessageAdmin(ProtectedAdmin):
    list_display = ["sent_at", "chat", "speaker", "text_excerpt", "from_human", "addressed_bot",
                    "produced"]
    list_filter = ["from_human", "chat"]
    search_fields = ["text", "speaker"]
    list_select_related = ["chat", "addressed_bot"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="text")
    def text_excerpt(self, message: ChatMessage) -> str:
        return message.text[:100]


@admin.register(Trigger)
class TriggerAdmin(ProtectedAdmin):
    list_display = ["key", "kind", "bot", "chat", "queue_item", "created_at"]
    list_filter = ["kind"]
    list_select_related = ["bot", "chat", "queue_item"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
