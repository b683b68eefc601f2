"""The shape of a Telegram bot token, checked before it goes into a URL or the database:
@BotFather's tokens are the bot's numeric id, a colon and a secret of letters, digits, ``-``
and ``_`` (``123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11``). Anything else (a space, CR/LF, a
slash, a control character) would change the request URL, or make httpx refuse it.
"""

from __future__ import annotations

import re

__all__ = ["MAX_TOKEN_CHARS", "token_problem"]

MAX_TOKEN_CHARS = 200
_TOKEN = re.compile(r"[0-9]{1,20}:[A-Za-z0-9_-]{1,178}")


def token_problem(token: str) -> str:
    """Why ``token`` is not a bot token ("" when it has the shape). Never quotes the token."""
    if len(token) > MAX_TOKEN_CHARS:
        return f"must be at most {MAX_TOKEN_CHARS} characters, it has {len(token)}"
    if _TOKEN.fullmatch(token):
        return ""
    if any(ord(c) < 32 or ord(c) == 127 for c in token):
        return "must not contain control characters (a line break, a tab, NUL…)"
    return ("must look like 123456:ABC-DEF1234ghIkl: the bot's id in digits, a colon, then "
            "only letters, digits, - and _")
