"""The prompt a bot gets in a chat: its system prompt (or the platform default) and a user
prompt with the chat's recent, token-bounded history."""

from __future__ import annotations

from django.conf import settings

from batchgen.conversations import history
from batchgen.core.prompts import DEFAULT_SYSTEM_PROMPT, generate_user_prompt
from batchgen.models import Bot, Chat


def system_prompt_for(bot: Bot) -> str:
    return (bot.system_prompt.strip() or settings.BOT_DEFAULT_SYSTEM_PROMPT
            or DEFAULT_SYSTEM_PROMPT)


def cache_key_for(bot: Bot) -> str:
    """The provider's prompt-cache key: one per bot, whose prompts share their start."""
    return f"bot-{bot.pk}"


def prompt_for(bot: Bot, chat: Chat) -> tuple[str, str]:
    """(system prompt, user prompt) for ``bot`` speaking in ``chat`` right now."""
    user_prompt = generate_user_prompt(
        bot_name=bot.name, persona=bot.persona, chat_title=chat.title,
        recent_messages=history.recent_messages(chat),
    )
    return system_prompt_for(bot), user_prompt
