"""Prompt building and the content filters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.core.prompts import (
    _SECRET_PATTERNS,
    DEFAULT_SYSTEM_PROMPT,
    MAX_PROMPT_CHARS,
    REDACTED,
    build_user_prompt,
    filter_content,
    generate_user_prompt,
    is_blank,
    postprocess_output,
    redact_secrets,
)

BOT_TOKEN = "1234567890:" + "AbCdEfGhIjKlMnOpQrStUvWxYz012345"


def test_filter_strips_control_characters_and_collapses_whitespace():
    assert filter_content("  hello\x00\x07   there\n\n\tfriend\u200b ") == "hello there friend"


@pytest.mark.parametrize("secret", [
    BOT_TOKEN, "sk-proj-abcdefghijklmnop1234", "gsk_abcdefghijklmnop1234",
    "AIzaSyA1234567890abcdefghijklmnopqrstu"])
def test_filter_redacts_secret_looking_strings(secret):
    assert filter_content(f"my key is {secret} ok") == "my key is [redacted] ok"


def test_filter_caps_the_length():
    assert len(filter_content("word " * 5000)) <= MAX_PROMPT_CHARS


def test_filter_keeps_ordinary_text_and_numbers():
    assert filter_content("BIST100 at 9,870: up 1.2% [[fault:500]]") == \
        "BIST100 at 9,870: up 1.2% [[fault:500]]"


@pytest.mark.parametrize(("raw", "clean"), [
    ('  "Good morning everyone!"  ', "Good morning everyone!"),
    ("“Quoted in curly quotes”", "Quoted in curly quotes"),
    ("As an AI language model, I think the market is calm.", "I think the market is calm."),
    ("As an AI, I'd say: buy the dip", "I'd say: buy the dip"),
    ("Message: see you all tomorrow", "see you all tomorrow"),
    ("line one\r\nline two", "line one\nline two"),
])
def test_postprocess_cleans_the_reply(raw, clean):
    assert postprocess_output(raw) == clean


@pytest.mark.parametrize("raw", [None, "", "   ", '""', "As an AI language model."])
def test_postprocess_gives_none_when_nothing_is_left(raw):
    assert postprocess_output(raw) is None


def test_postprocess_redacts_tokens():
    assert postprocess_output(f"the token is {BOT_TOKEN}") == "the token is [redacted]"


def test_postprocess_leaves_a_long_reply_whole_for_the_sender_to_cut_at_a_sentence():
    reply = "A long sentence with many words in it. " * 1000

    assert postprocess_output(reply) == reply.strip()


FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
PERSIAN = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # "I want", with its ZWNJ
HEBREW = "\u200f\u05e9\u05dc\u05d5\u05dd\u200e 42"  # RLM, "shalom", LRM


@pytest.mark.parametrize("text", [f"our {FAMILY} says hi", PERSIAN, HEBREW])
def test_joiners_and_bidi_marks_survive_both_filters(text):
    assert postprocess_output(text) == text
    assert filter_content(text) == text


def test_text_that_cannot_be_stored_is_replaced_not_dropped():
    reply = "hello \ud83d there\x00!"

    cleaned = postprocess_output(reply)

    assert cleaned == "hello \ufffd there!"
    cleaned.encode("utf-8")  # a lone surrogate would raise here, in the save or the send
    assert filter_content("hi \udc00 you") == "hi \ufffd you"


def test_invisible_formatting_that_only_hides_text_is_still_removed():
    spoof = "pay \u202eusd 001\u202c now\u200b\ufeff"

    assert postprocess_output(spoof) == "pay usd 001 now"
    assert postprocess_output("one\u2028two") == "one\ntwo"


def test_the_user_prompt_names_the_bot_the_chat_and_the_recent_messages():
    prompt = generate_user_prompt("Ayla", "a cheerful trader", "Borsa Sohbet",
                                  ["BIST100 is up", f"secret {BOT_TOKEN}", "  "])

    assert "You are Ayla" in prompt and "a cheerful trader" in prompt
    assert "Borsa Sohbet" in prompt and "- BIST100 is up" in prompt
    assert BOT_TOKEN not in prompt and "[redacted]" in prompt


def test_the_user_prompt_has_sensible_defaults():
    prompt = generate_user_prompt("Bot", "", "", [])

    assert "(no messages yet)" in prompt and "a Telegram chat" in prompt


INSTRUCTION = "Write Ayla's next message to the chat. Reply with the message text only."


def sent_to_the_provider(prompt: str) -> str:
    return filter_content(prompt)  # what LLMClient does to every prompt on the way out


def test_a_huge_persona_is_cut_to_its_share_and_the_chat_is_kept(caplog):
    recent = [f"message {n} " + "word " * 50 for n in range(20)]

    built = build_user_prompt("Ayla", "persona " * 125_000, "Borsa Sohbet", recent)

    sent = sent_to_the_provider(built.text)
    assert len(sent) <= MAX_PROMPT_CHARS and sent.endswith(INSTRUCTION)
    assert "Borsa Sohbet" in sent and filter_content(recent[-1]).strip() in sent
    assert built.persona_cut > 990_000 and built.shortened
    assert "persona " in sent
    assert "shortened" in caplog.text and "Ayla" in caplog.text
    assert generate_user_prompt("Ayla", "persona " * 125_000, "Borsa Sohbet",
                                recent) == built.text


def test_a_long_chat_leaves_out_its_oldest_messages_and_keeps_the_whole_persona():
    recent = [f"message {n} " + "x" * 480 for n in range(20)]  # 20 x ~500: over the budget
    persona = "a trader " * 200

    built = build_user_prompt("Ayla", persona, "chat", recent)

    sent = sent_to_the_provider(built.text)
    assert len(sent) <= MAX_PROMPT_CHARS and sent.endswith(INSTRUCTION)
    assert built.messages_dropped > 0 and built.persona_cut == 0
    assert "message 19 " in sent and "message 0 " not in sent  # the newest are kept
    assert persona.strip() in sent


def test_a_prompt_that_fits_is_not_marked_shortened():
    built = build_user_prompt("Ayla", "a cheerful trader", "Borsa", ["hi", "hello"])

    assert (built.persona_cut, built.messages_dropped, built.shortened) == (0, 0, False)
    assert built.text == generate_user_prompt("Ayla", "a cheerful trader", "Borsa",
                                              ["hi", "hello"])


def test_the_default_system_prompt_forbids_secrets():
    assert "access tokens" in DEFAULT_SYSTEM_PROMPT


# The filters' fast paths must say exactly what the plain definitions say: text drawn from
# what each rule is about (digits and colons next to key-shaped runs, the key prefixes,
# whitespace, control and invisible characters, text that cannot be stored).
_TRICKY = st.lists(st.sampled_from(
    [*"0123456789:skgAIza_-xyzXYZ ", "sk-", "gsk_", "AIza", "١٢٣٤٥", "1234", "12345:",
     "0123456789abcdef", "\t", "\n", "\u00a0", "\u2003", "\u2028", "\u200b", "\u202e",
     "\ufeff", "\x00", "\x1f", "\x85", "\ud800"]),
    max_size=80).map("".join)


def _redact_everywhere(text: str) -> str:
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


@given(_TRICKY)
@settings(max_examples=400, deadline=None)
def test_redaction_finds_what_every_pattern_run_everywhere_finds(text):
    assert redact_secrets(text) == _redact_everywhere(text)


@pytest.mark.parametrize(("text", "redacted"), [
    ("12345:" + "a" * 30, True), ("١٢٣٤٥:" + "b" * 30, True), ("9" * 40 + ":" + "a" * 40, True),
    ("x 12345:" + "A" * 30, True), ("x12345:" + "A" * 30, False), ("1234:" + "A" * 30, False),
    ("sk-" + "c" * 16, True), ("ask-" + "c" * 16, False), ("gsk_" + "d" * 16, True),
    ("AIza" + "e" * 30, True), ("AIza" + "e" * 29, False)])
def test_each_secret_shape_is_redacted_where_its_pattern_matches(text, redacted):
    assert redact_secrets(text) == _redact_everywhere(text)
    assert (REDACTED in redact_secrets(text)) is redacted


@given(_TRICKY)
@settings(max_examples=400, deadline=None)
def test_a_blank_prompt_is_exactly_one_the_filters_empty(text):
    assert is_blank(text) == (filter_content(text) == "")
