"""The Telegram sender over real HTTP against the project's fake Bot API."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from batchgen.fakes.ports import free_port
from batchgen.fakes.telegram_server import make_app
from batchgen.telegram.client import (
    ChatPacer,
    TelegramSender,
    fit_message,
    max_retry_after_s,
    split_message,
)
from tests.fakes import RunningServer, run_in_thread

TOKEN = "123456:SECRET-bot-token_xyz"
http = httpx.Client(timeout=5)  # for the fake's control endpoints


class FakeTime:
    """A clock and a sleep that moves it, so pacing and back-off cost no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = run_in_thread(make_app)
    yield running
    running.stop()


@pytest.fixture
def fake(server: RunningServer) -> str:
    http.post(f"{server.base_url}/_reset").raise_for_status()
    return server.base_url


def control(base_url: str, **body: object) -> None:
    http.post(f"{base_url}/_control", json=body).raise_for_status()


def delivered(base_url: str) -> list[dict]:
    return http.get(f"{base_url}/_messages").raise_for_status().json()


def requests_seen(base_url: str) -> int:
    return http.get(f"{base_url}/_stats").raise_for_status().json()["requests"]


def no_pacing() -> ChatPacer:
    return ChatPacer(0.0, None, None)


def make_sender(base_url: str, time: FakeTime | None = None, **kwargs: object) -> TelegramSender:
    time = time or FakeTime()
    kwargs.setdefault("pacer", no_pacing())
    return TelegramSender(base_url, timeout=kwargs.pop("timeout", 2.0), sleep=time.sleep,
                          **kwargs)


def paragraphs(count: int, size: int) -> list[str]:
    return [(f"Paragraph {n}." + " word" * size)[:size - 1] + "." for n in range(count)]


# --- sending ------------------------------------------------------------------


def test_it_sends_plain_text_and_returns_the_message_id(fake: str) -> None:
    result = make_sender(fake).send(TOKEN, 42, "Hello, chat!")

    assert (result.status, result.parts_sent, result.error) == ("sent", 1, "")
    [message] = delivered(fake)
    assert result.message_ids == [message["message_id"]]
    assert (message["token"], message["chat_id"], message["text"]) == (TOKEN, 42, "Hello, chat!")
    assert message["params"] == {"link_preview_options": {"is_disabled": True}}  # no parse_mode


def test_a_long_text_goes_as_parts_cut_at_paragraphs_in_order(fake: str) -> None:
    text = "\n\n".join(paragraphs(10, 1000))
    assert len(text) > 10_000
    progress: list[tuple[int, int]] = []

    result = make_sender(fake).send(TOKEN, 7, text, on_part_sent=lambda *p: progress.append(p))

    texts = [m["text"] for m in delivered(fake)]
    assert result.status == "sent"
    assert len(texts) == 3 and result.parts_sent == 3
    assert "\n\n".join(texts) == text.strip()  # every cut fell between two paragraphs
    assert progress == list(enumerate(result.message_ids))


def test_start_part_continues_a_split_message(fake: str) -> None:
    text = "\n\n".join(paragraphs(10, 1000))

    result = make_sender(fake).send(TOKEN, 7, text, start_part=1)

    assert [m["text"] for m in delivered(fake)] == split_message(text)[1:]
    assert (result.status, result.parts_sent, len(result.message_ids)) == ("sent", 3, 2)


def test_a_429_waits_retry_after_then_succeeds(fake: str) -> None:
    control(fake, fault="429", count=2, retry_after=3)
    time = FakeTime()

    result = make_sender(fake, time).send(TOKEN, 42, "hi")

    assert result.status == "sent"
    assert time.sleeps == [3.0, 3.0]
    assert len(delivered(fake)) == 1


def test_too_many_429s_give_up_as_retryable_with_the_wait(fake: str) -> None:
    control(fake, fault="429", count=10, retry_after=1)

    result = make_sender(fake, max_429_retries=2).send(TOKEN, 42, "hi")

    assert (result.status, result.retryable, result.retry_after_s) == ("failed", True, 1.0)
    assert result.error == "Too Many Requests: retry after 1"
    assert requests_seen(fake) == 3


def test_a_long_flood_wait_is_reported_as_asked_not_slept_here(fake: str) -> None:
    control(fake, fault="429", retry_after=3600)
    time = FakeTime()

    result = make_sender(fake, time).send(TOKEN, 42, "hi")

    assert (result.status, result.retryable, result.retry_after_s) == ("failed", True, 3600.0)
    assert time.sleeps == [] and requests_seen(fake) == 1 and delivered(fake) == []


def test_a_flood_wait_beyond_the_ceiling_is_final_and_says_why(fake: str, settings) -> None:
    settings.BATCH_MAX_DEFER_SECONDS = 1800.0
    control(fake, fault="429", retry_after=3600)

    result = make_sender(fake).send(TOKEN, 42, "hi")

    assert (result.status, result.retryable, result.retry_after_s) == ("failed", False, 3600.0)
    assert max_retry_after_s() == 1800.0
    assert "3600" in result.error and "BATCH_MAX_DEFER_SECONDS=1800" in result.error


def test_the_flood_wait_ceiling_defaults_to_a_day() -> None:
    assert max_retry_after_s() == 86_400.0


def test_a_group_that_became_a_supergroup_reports_the_new_id(fake: str) -> None:
    control(fake, fault="migrate", chat_id=-4242)

    result = make_sender(fake).send(TOKEN, -4242, "hi")

    assert (result.status, result.migrate_to_chat_id, result.chat_gone) == ("failed", -1004242,
                                                                            False)
    assert "upgraded to a supergroup" in result.error and delivered(fake) == []
    assert make_sender(fake).send(TOKEN, -1004242, "hi").status == "sent"  # resend is safe


@pytest.mark.parametrize(("fault", "description", "gone"), [
    ("403", "Forbidden: bot was blocked by the user", True),
    ("403", "Forbidden: bot was kicked from the group chat", True),
    ("403", "Forbidden: user is deactivated", True),
    ("400", "Bad Request: chat not found", True),
    ("400", "Bad Request: group chat was deactivated", True),
    ("400", "Bad Request: message text is empty", False),
    ("401", "Unauthorized", False),
])
def test_a_chat_the_bot_cannot_reach_any_more_is_flagged_gone(
    fake: str, fault: str, description: str, gone: bool,
) -> None:
    control(fake, fault=fault, description=description)

    result = make_sender(fake).send(TOKEN, 42, "hi")

    assert (result.status, result.retryable, result.error) == ("failed", False, description)
    assert (result.chat_gone, result.migrate_to_chat_id) == (gone, None)


@pytest.mark.parametrize(("fault", "description"), [
    ("400", "Bad Request: chat not found"),
    ("403", "Forbidden: bot was blocked by the user"),
])
def test_a_refusal_is_final_with_telegrams_description(
    fake: str, fault: str, description: str,
) -> None:
    control(fake, fault=fault)
    time = FakeTime()

    result = make_sender(fake, time).send(TOKEN, 42, "hi")

    assert (result.status, result.error, result.retryable) == ("failed", description, False)
    assert requests_seen(fake) == 1 and time.sleeps == []


def test_connection_refused_is_retried_then_failed() -> None:
    time = FakeTime()
    sender = make_sender(f"http://127.0.0.1:{free_port()}", time)

    result = sender.send(TOKEN, 42, "hi")

    assert (result.status, result.retryable, result.parts_sent) == ("failed", True, 0)
    assert "ConnectError" in result.error and "after 4 attempts" in result.error
    assert time.sleeps == [0.5, 1.0, 2.0]


def test_accept_then_drop_is_send_unknown_and_never_resent(fake: str) -> None:
    control(fake, fault="drop")

    result = make_sender(fake).send(TOKEN, 42, "hi")

    assert result.status == "send_unknown"
    assert "RemoteProtocolError" in result.error
    assert [m["text"] for m in delivered(fake)] == ["hi"]
    assert requests_seen(fake) == 1


def test_a_read_timeout_is_send_unknown_and_never_resent(fake: str) -> None:
    control(fake, fault="latency", latency=2.0)

    result = make_sender(fake, timeout=0.2).send(TOKEN, 42, "hi")

    assert result.status == "send_unknown"
    assert "ReadTimeout" in result.error
    assert requests_seen(fake) == 1


def test_a_server_error_is_send_unknown(fake: str) -> None:
    control(fake, fault="500")

    result = make_sender(fake).send(TOKEN, 42, "hi")

    assert (result.status, result.error) == ("send_unknown", "Internal Server Error")


def test_a_refused_second_part_reports_the_first(fake: str) -> None:
    text = "\n\n".join(paragraphs(10, 1000))

    def refuse_the_next(index: int, message_id: int) -> None:
        control(fake, fault="403", chat_id=42)

    result = make_sender(fake).send(TOKEN, 42, text, on_part_sent=refuse_the_next)

    assert (result.status, result.parts_sent, result.parts_total) == ("failed", 1, 3)
    assert result.message_ids == [delivered(fake)[0]["message_id"]]


def test_the_token_never_appears_in_errors_or_logs(
    fake: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    results = [make_sender(f"http://127.0.0.1:{free_port()}").send(TOKEN, 1, "x")]
    for fault in ("drop", "400", "429"):
        control(fake, fault=fault, retry_after=0)
        results.append(make_sender(fake).send(TOKEN, 1, "x"))
    control(fake, fault="latency", latency=0.5)
    results.append(make_sender(fake, timeout=0.2).send(TOKEN, 1, "x"))

    assert [r.status for r in results] == ["failed", "send_unknown", "failed", "sent",
                                           "send_unknown"]
    secret = TOKEN.split(":")[1]
    assert all(secret not in r.error for r in results)
    assert "HTTP Request: POST" in caplog.text  # httpx did log the URLs...
    assert secret not in caplog.text  # ...without the token
    assert all(secret not in repr(sender) for sender in [make_sender(fake)])


# --- pacing -------------------------------------------------------------------


def test_pacing_keeps_one_chat_at_one_message_a_second(fake: str) -> None:
    time = FakeTime()
    pacer = ChatPacer(clock=time.clock, sleep=time.sleep)
    sender = make_sender(fake, time, pacer=pacer)
    sent_at: list[float] = []

    for _ in range(5):
        sender.send(TOKEN, 42, "hi", on_part_sent=lambda *_: sent_at.append(time.now))

    assert len(delivered(fake)) == 5
    assert [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)] == [1.0] * 4


def test_pacing_lets_other_chats_go_at_once() -> None:
    time = FakeTime()
    pacer = ChatPacer(clock=time.clock, sleep=time.sleep)

    waits = [pacer.wait(chat) for chat in (1, 2, 3, 1)]

    assert waits == [0.0, 0.0, 0.0, 1.0]


def test_pacing_holds_a_group_to_twenty_a_minute() -> None:
    time = FakeTime()
    pacer = ChatPacer(clock=time.clock, sleep=time.sleep)
    start = time.now
    sent_at = []
    for _ in range(21):
        pacer.wait(-100)
        sent_at.append(time.now - start)

    assert sent_at[:20] == [float(n) for n in range(20)]
    assert sent_at[20] == 60.0


def test_pacing_holds_all_chats_to_thirty_a_second() -> None:
    time = FakeTime()
    pacer = ChatPacer(clock=time.clock, sleep=time.sleep)

    waits = [pacer.wait(chat) for chat in range(31)]

    assert waits[:30] == [0.0] * 30
    assert waits[30] == 1.0


# --- splitting ----------------------------------------------------------------


def test_short_text_is_one_part_and_blank_text_none() -> None:
    assert split_message("  hello \n") == ["hello"]
    assert split_message(" \n ") == []


def test_without_paragraphs_it_cuts_after_a_sentence() -> None:
    text = "One sentence here. " * 300

    parts = split_message(text, limit=1000)

    assert all(len(p) <= 1000 and p.endswith(".") for p in parts)
    assert " ".join(parts) == text.strip()


def test_without_sentences_it_cuts_between_words() -> None:
    text = "word " * 1000

    parts = split_message(text, limit=998)

    assert all(len(p) <= 998 and p.endswith("word") for p in parts)
    assert " ".join(parts) == text.strip()


def test_an_unbroken_string_is_cut_anywhere() -> None:
    assert split_message("x" * 10_000) == ["x" * 4096, "x" * 4096, "x" * 1808]


def test_emoji_count_twice_as_telegram_measures_utf16() -> None:
    parts = split_message("\U0001F600" * 3000)

    assert [len(p) for p in parts] == [2048, 952]


# --- long replies ---------------------------------------------------------------


def sentences(count: int) -> str:
    return " ".join(f"Sentence number {n} says something quite ordinary." for n in range(count))


def test_a_reply_too_long_for_four_messages_ends_at_a_sentence(fake: str) -> None:
    text = sentences(500)  # about 26,000 characters: seven messages' worth
    fitted = fit_message(text)

    result = make_sender(fake).send(TOKEN, 7, text)

    texts = [m["text"] for m in delivered(fake)]
    assert (result.status, len(texts), result.parts_total) == ("sent", 4, 4)
    assert all(len(part) <= 4096 for part in texts) and texts[-1].endswith("ordinary.")
    assert " ".join(texts) == fitted.text and text.startswith(fitted.text)
    assert result.cut_chars == fitted.cut_chars == len(text) - len(fitted.text) > 0


def test_the_number_of_parts_follows_the_setting(settings) -> None:
    settings.TELEGRAM_MAX_PARTS = 2

    fitted = fit_message(sentences(500))

    assert len(fitted.parts) == 2 and fitted.text.endswith("ordinary.")


def test_a_cut_without_sentences_ends_at_a_line_or_a_word_never_mid_word() -> None:
    listing = fit_message("\n".join(f"- item {n} with no full stop" for n in range(1000)), 1)
    words = fit_message("word " * 2000, 1)

    assert listing.parts[-1].endswith("with no full stop") and listing.cut_chars > 0
    assert words.text.endswith("word\u2026") and len(words.text) <= 4096
    assert words.cut_chars == len("word " * 2000) - 1 - (len(words.text) - 1)  # not the "…"


def test_a_reply_that_fits_is_kept_whole() -> None:
    fitted = fit_message("  \U0001F468\u200d\U0001F469\u200d\U0001F467 hello  ")

    assert (fitted.text, fitted.parts, fitted.cut_chars) == (
        "\U0001F468\u200d\U0001F469\u200d\U0001F467 hello",
        ["\U0001F468\u200d\U0001F469\u200d\U0001F467 hello"], 0)


# --- the fake itself ------------------------------------------------------------


def test_the_fake_accepts_form_data_and_enforces_a_chat_limit(fake: str) -> None:
    control(fake, chat_limit_per_second=1)
    url = f"{fake}/bot{TOKEN}/sendMessage"

    first = http.post(url, data={"chat_id": "-5", "text": "a"})
    second = http.post(url, data={"chat_id": "-5", "text": "b"})
    control(fake, chat_limit_per_second=None)

    assert first.json()["result"]["chat"] == {"id": -5, "type": "group"}
    assert second.status_code in (200, 429)  # 429 unless the second ticked over in between
    stats = http.get(f"{fake}/_stats").json()
    assert stats["max_per_chat_per_second"] == 1
