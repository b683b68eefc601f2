"""The Telegram Bot API: one HTTP client (bot_api) that sending (client) and every other call go
through, and the pacing every worker shares through Redis (pacing). Plain dicts and dataclasses
in and out, no ORM: may import state and core.
"""
