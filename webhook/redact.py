"""Keep the push token out of everything the receiver stores or spools (pure functions).

Two places could hold it: the raw body of a rejected delivery (`push_inbox.raw_body`: the
whole form, `token=...` included) and, in principle, the decoded `data` of an accepted one
(`push_inbox.payload`, the typed rows' `raw`, the spool file) if a sender put it there.
- `redact_body` blanks the value of every `token` field it can recognise in a raw body — a
  urlencoded field (name possibly percent-encoded), a JSON member, a multipart part — without
  parsing it (the body may be unreadable), and then every literal occurrence of the expected
  token (plain, percent-encoded or JSON-escaped);
- `scrub_secret` replaces the expected token inside the strings of a decoded value.
Nothing here raises; the cost is a few regex scans of a body already capped in size.
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"

# `token=` anywhere (a rejected body may be garbage before it; blanking a look-alike costs
# nothing); letters may be percent-encoded (`%74oken`), as a form parser would decode them.
_NAME_PATTERN = r"(?:t|%74)(?:o|%6f)(?:k|%6b)(?:e|%65)(?:n|%6e)"
_FORM_FIELD = re.compile(rf"(?i)({_NAME_PATTERN}\s*=)[^&\s\"]*")
# A JSON member "token": value (string of bounded length, so an unterminated one cannot make
# the scan quadratic, or a bare scalar).
_JSON_MEMBER = re.compile(r'(?i)("token"\s*:\s*)(?:"(?:[^"\\]|\\.){0,4096}"|[^\s,}\]]{1,4096})')
# A multipart part named token: its headers, the blank line, then the value line.
_MULTIPART_PART = re.compile(
    r'(?i)(name="?token"?[^\r\n]*\r?\n(?:[^\r\n]+\r?\n){0,8}\r?\n)[^\r\n]*'
)


# Shorter tokens are not searched for literally: masking every "abc" of a payload would
# mangle data (and such a token is too weak anyway; the receiver warns about it at start).
_MIN_LITERAL = 8


@cache
def _literal_forms(secret: str | None) -> list[str]:
    """The ways the token can be spelled inside a body: plain, URL-encoded, JSON-escaped."""
    if not secret or len(secret) < _MIN_LITERAL:
        return []
    forms = {secret, quote_plus(secret), quote(secret, safe=""), json.dumps(secret)[1:-1]}
    return sorted(forms, key=len, reverse=True)


def redact_body(body: bytes, secret: str | None) -> str:
    """The raw body as text (invalid UTF-8 replaced, NUL removed) with the token blanked."""
    text = body.decode("utf-8", "replace").replace("\x00", "")
    if "oken" in text or "%" in text:
        text = _FORM_FIELD.sub(rf"\1{MASK}", text)
        text = _JSON_MEMBER.sub(rf'\1"{MASK}"', text)
        text = _MULTIPART_PART.sub(rf"\1{MASK}", text)
    for form in _literal_forms(secret):
        text = text.replace(form, MASK)
    return text


def _replace_in(value: Any, forms: list[str]) -> Any:
    if isinstance(value, str):
        for form in forms:
            value = value.replace(form, MASK)
        return value
    if isinstance(value, list):
        return [_replace_in(v, forms) for v in value]
    if isinstance(value, dict):
        return {_replace_in(k, forms): _replace_in(v, forms) for k, v in value.items()}
    return value


def scrub_secret(value: Any, text: str, secret: str | None) -> tuple[Any, str]:
    """(value, JSON text) with the token replaced wherever it occurs in a string.

    Unchanged (and costing one substring search) when the text does not contain the token;
    `value` must be depth-bounded (it is: see `webhook.parse.MAX_JSON_DEPTH`).
    """
    forms = _literal_forms(secret)
    if not any(form in text for form in forms):
        return value, text
    cleaned = _replace_in(value, forms)
    return cleaned, json.dumps(cleaned, ensure_ascii=False, separators=(",", ":"))
