"""JSON from outside (Telegram updates, admin fields) parsed within limits and made storable:
``parse`` refuses nesting deep enough to raise ``RecursionError`` and numbers PostgreSQL's
jsonb refuses (``NaN``, ``Infinity``, ``1e999``) with a ``JsonRefused`` that says which limit;
``storable_json`` replaces NUL and lone surrogates; ``top_level`` slices a document into its
top-level values without parsing them, so a list whose one item no parser can read is read
item by item. Why ``json.loads`` alone is not enough: docs/design.md, "Input at the doors".
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Any

from batchgen.core.text import storable

__all__ = ["JsonRefused", "NotJson", "parse", "shape_problem", "storable_json", "top_level"]

# Serialised with ensure_ascii=False, a value that needs cleaning shows an escaped C0 control
# (json.dumps writes \b and \f short, the others as \u00XX; \n, \r and \t are kept by
# storable) or a raw lone surrogate. A false alarm (a literal backslash-b) only costs the walk.
_NEEDS_CLEANING = re.compile(r"\\(?:[bf]|u00(?:0[0-8bcef]|1[0-9a-f]))|[\ud800-\udfff]")
# What top_level counts: a whole string (brackets inside it are text), a bracket, a separator.
_STRUCTURE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[][{},:]')


class JsonRefused(ValueError):
    """The JSON is refused; the message names the limit it breaks."""


class NotJson(JsonRefused):
    """The text is not JSON at all (a syntax error, bytes that are not UTF-8)."""


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise JsonRefused(f"the number {text[:20]} is out of range")
    return number


def _constant(name: str) -> float:
    raise JsonRefused(f"{name} is not a JSON number")


def parse(raw: bytes | str, *, max_bytes: int, max_depth: int | None) -> Any:
    """``raw`` parsed, or ``JsonRefused`` naming the rule: over ``max_bytes`` (characters
    for a str), nested deeper than ``max_depth``, a non-finite number, or (``NotJson``) not
    JSON at all. ``max_depth=None`` leaves the depth to the caller (``shape_problem``): only
    what the parser cannot follow is refused."""
    if len(raw) > max_bytes:
        unit = "bytes" if isinstance(raw, bytes) else "characters"
        raise JsonRefused(f"longer than {max_bytes:,} {unit}")
    try:
        value = json.loads(raw, parse_float=_finite, parse_constant=_constant)
    except JsonRefused:
        raise
    except RecursionError:
        limit = f"deeper than {max_depth} levels" if max_depth else "too deep to parse"
        raise JsonRefused(f"nested {limit}") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit integer
        raise NotJson(f"not valid JSON: {str(exc)[:120]}") from None
    problem = shape_problem(value, max_depth) if max_depth else ""
    if problem:
        raise JsonRefused(problem)
    return value


def shape_problem(value: Any, max_depth: int) -> str:
    """Why ``value`` is too deep to keep ("" when it is not). Iterative: a value nested a
    few hundred levels must not overflow the stack of the code that checks it."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return f"nested deeper than {max_depth} levels"
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return ""


def storable_json(value: Any) -> tuple[Any, int]:
    """``value`` with every key and string made ``storable``, and how many of them changed.
    The value must be within a depth limit already (``shape_problem``): this recurses."""
    if not _NEEDS_CLEANING.search(json.dumps(value, ensure_ascii=False)):
        return value, 0  # the common case: one C-speed pass, nothing rebuilt
    changed = [0]
    return _clean(value, changed), changed[0]


def _clean(value: Any, changed: list[int]) -> Any:
    if isinstance(value, str):
        clean = storable(value)
        changed[0] += clean != value
        return clean
    if isinstance(value, list):
        return [_clean(item, changed) for item in value]
    if isinstance(value, dict):
        return {_clean(key, changed): _clean(item, changed) for key, item in value.items()}
    return value


def top_level(text: str) -> list[str]:
    """The texts of the values directly inside the array or object ``text`` (an object's keys
    and values alternate), found by counting brackets, never by parsing: a value nested past
    any parser's stack, or holding a number no parser takes, is only sliced out, for the
    caller to ``parse`` (or refuse) on its own. ``NotJson`` when ``text`` is not an array or
    object whose brackets balance."""
    text = text.strip()
    if text[:1] not in ("[", "{"):
        raise NotJson("not valid JSON: not an array or object")
    parts: list[str] = []
    depth, start = 0, 1
    for match in _STRUCTURE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
        elif token in ("]", "}"):
            depth -= 1
            if depth == 0:
                if text[match.end():].strip():
                    raise NotJson("not valid JSON: text after the end")
                last = text[start:match.start()].strip()
                return [*parts, last] if last or parts else parts
        elif depth == 1 and token in (",", ":"):
            parts.append(text[start:match.start()].strip())
            start = match.end()
    raise NotJson("not valid JSON: brackets do not balance")
