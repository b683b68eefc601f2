"""The state machines of work: queue items (queue: push, claim, release, finish, recover) and
outbox messages (outbox: pending, sending, sent, send_unknown, failed). Every status change of
either happens here. May import models, telegram, metrics, state and core.
"""
