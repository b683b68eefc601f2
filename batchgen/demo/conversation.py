"""The whole platform loop against the fake Telegram, for ``make demo``: a person writes in a
group, the member bots reply with that message in their prompt, one bot answers another until
the turn limit, a bot posts on its cadence, and one update arrives by webhook through the same
handler. Needs TELEGRAM_API_BASE_URL pointing at the fake Telegram and a working LLM
configuration (the demo's fake provider).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import httpx
from django.conf import settings
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command

from batchgen.conversations import poll, setup, updates
from batchgen.conversations.behaviour import produce
from batchgen.models import Bot, Chat, Message, QueueItem, Setting
from batchgen.models.conversations import ChatMessage, Membership
from batchgen.telegram.bot_api import BotApi

GROUP = -1001234567890
PEOPLE = {"id": 4242, "is_bot": False, "first_name": "Dana"}
BOTS = (("Chef Remy", "a French chef who has an opinion about every dish"),
        ("Sporty Sam", "a marathon runner who turns every topic into training advice"),
        ("Nerdy Nia", "a physicist who explains the science behind everyday things"))


def _fake(path: str, body: dict) -> dict:
    url = f"{settings.TELEGRAM_API_BASE_URL.rstrip('/')}{path}"
    return httpx.post(url, json=body, timeout=10).raise_for_status().json()


def _bots(say: Callable[[str], None]) -> list[Bot]:
    bots = []
    for n, (name, persona) in enumerate(BOTS, start=1):
        token = f"{7770000 + n}:DEMO-{name.split()[1].upper()}-{'k' * 20}"
        identity = setup.check_token(token)
        bot, _ = Bot.objects.update_or_create(name=name, defaults={
            "telegram_token": token, "persona": persona, "username": identity.username,
            "telegram_id": identity.telegram_id, "webhook_secret": "", "is_active": True})
        _fake("/_member", {"token": token, "chat_id": GROUP, "chat_title": "Weekend plans",
                           "chat_type": "supergroup", "status": "member"})
        say(f"  getMe: {name} is @{identity.username}; added to the group")
        bots.append(bot)
    poll.poll_once()
    return bots


def _run_until_quiet(rounds: int = 8) -> None:
    """Tick until the conversation is quiet. Tick produces before it runs; ``produce`` here
    as well lets the loop see what the chats call for before deciding it is done."""
    for _ in range(rounds):
        produce()
        if not QueueItem.objects.filter(status=QueueItem.Status.PENDING).exists():
            return
        call_command("tick", sync=True, stdout=_Quiet())


class _Quiet:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _transcript(chat: Chat, since_id: int, say: Callable[[str], None]) -> None:
    for message in Message.objects.filter(chat=chat, id__gt=since_id).order_by("sent_at"):
        assert message.bot is not None  # the demo deletes no bot
        say(f"  {message.bot.name}: {message.text[:110]}")


def run(say: Callable[[str], None] = print) -> None:
    Setting.objects.update_or_create(key="batch_mode_enabled", defaults={"value": True})
    Setting.objects.update_or_create(key="batch_size", defaults={"value": 10})
    say("1. Three bots are set up (getMe) and added to a group; the group is discovered:")
    bots = _bots(say)
    chat = Chat.objects.get(telegram_chat_id=GROUP)
    Chat.objects.filter(id=chat.id).update(max_bot_turns=4)
    Membership.objects.filter(chat=chat).update(cadence_minutes=None)
    say(f"   chat {chat} ({chat.chat_type}), members: {', '.join(b.name for b in bots)}")
    mark = Message.objects.order_by("-id").values_list("id", flat=True).first() or 0

    say("2. A person writes in the group; the bots reply, then answer each other (K = 4):")
    _fake("/_inject", {"chat_id": GROUP, "from": PEOPLE, "text": "Any plans for Saturday?",
                       "tokens": [b.telegram_token for b in bots]})
    poll.poll_once()
    _run_until_quiet()
    _transcript(chat, mark, say)
    first = Message.objects.filter(chat=chat, id__gt=mark).order_by("id").first()
    if first is not None:
        seen = "Dana: Any plans for Saturday?" in first.prompt
        say(f"   the first reply's prompt contains the person's message: {seen}")

    say("3. A bot posts on its cadence (every 60 minutes):")
    mark = Message.objects.order_by("-id").values_list("id", flat=True).first() or 0
    Membership.objects.filter(chat=chat, bot=bots[2]).update(cadence_minutes=60,
                                                              next_post_at=None)
    Chat.objects.filter(id=chat.id).update(max_bot_turns=0)  # only the cadence post now
    _run_until_quiet()
    _transcript(chat, mark, say)

    say("4. An update by webhook goes through the same handler:")
    _webhook_delivery(bots[0], say)


def _webhook_delivery(bot: Bot, say: Callable[[str], None]) -> None:
    server = make_server("127.0.0.1", 0, WSGIHandler(), server_class=_ThreadedServer,
                         handler_class=_SilentHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = setup.enable_webhook(bot, f"http://127.0.0.1:{server.server_port}")
        answer = _fake("/_inject", {"chat_id": GROUP, "from": PEOPLE, "tokens":
                                    [bot.telegram_token], "text": f"@{bot.username} bonjour!"})
        delivered = answer["delivered"][bot.telegram_token]
        updates.process_pending()  # what the tick the webhook nudged does first
        stored = ChatMessage.objects.filter(chat__telegram_chat_id=GROUP).last()
        assert stored is not None  # the update just processed is stored
        say(f"   setWebhook {url}; Telegram posted update {delivered['update_id']}: "
            f"HTTP {delivered['status']} (kept); the tick processed it: "
            f"stored \"{stored.speaker}: {stored.text}\"")
    finally:
        with BotApi() as api:
            api.delete_webhook(bot.telegram_token)
        Bot.objects.filter(id=bot.id).update(webhook_secret="")
        server.shutdown()


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _SilentHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base name)
        pass
