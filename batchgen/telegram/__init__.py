"""The Telegram Bot API: one HTTP client (client, bot_api) and the pacing every worker shares
through Redis. Plain dicts and dataclasses in and out: no ORM here.
"""
