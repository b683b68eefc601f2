"""Queue priorities, higher first: what the producer gives each kind of work, and from which
priority work counts as urgent (a reply to a person or a mention), which keeps a reserved share
of a run's slots while the LLM rate budget binds."""

from __future__ import annotations

MENTION_PRIORITY = 10_000
REPLY_PRIORITY = 100
ANSWER_PRIORITY = 50
CADENCE_PRIORITY = 0
URGENT_PRIORITY = REPLY_PRIORITY
