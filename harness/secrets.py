"""Credentials never leave the process: every URL-shaped value is masked before it is printed,
logged, tagged or written.

Masking is textual, so it covers any URL in any config key (storage, tracking, or a key added
later) in every form the audit found: `u:pw@host`, `://:pw@host`, a password holding `/` or `@`
(`u:se/cret@host`, `u:se@cret@host`), and query parameters such as `?password=pw`. The userinfo of
a URL ends at the *last* `@` of its token (as `urllib.parse` reads it), so a password with an
`@` is masked whole. Passwords seen in the config are also remembered (`remember_secrets`) and
replaced literally wherever they turn up, e.g. decoded inside a driver's error message.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

__all__ = [
    "MASK",
    "SecretFilter",
    "install_log_filter",
    "mask_secrets",
    "mask_tree",
    "remember_secrets",
]

MASK = "***"

#: `scheme://` followed by the rest of one whitespace/quote-delimited token
_URL = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*://)(?P<rest>[^\s'\"<>]*)")
#: names whose values are secrets, in query strings and as config keys
SECRET_NAME = re.compile(
    r"(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|credential)", re.IGNORECASE
)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;][^=&;\s#]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|credential)[^=&;\s#]*=)(?P<value>[^&;\s#'\"]*)",
    re.IGNORECASE,
)
#: `password=...` outside a URL (libpq conninfo strings, driver messages)
_KV_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd)\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;&]+)",
    re.IGNORECASE,
)

_known: set[str] = set()


def _mask_url(m: re.Match[str]) -> str:
    scheme, rest = m["scheme"], m["rest"]
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        user, colon, _ = userinfo.partition(":")
        if colon:
            rest = f"{user}:{MASK}{rest[at:]}"
    return scheme + _QUERY_SECRET.sub(lambda q: q["key"] + MASK, rest)


def _url_secrets(text: str) -> set[str]:
    found = set()
    for m in _URL.finditer(text):
        rest = m["rest"]
        at = rest.rfind("@")
        if at >= 0 and ":" in rest[:at]:
            found.add(rest[:at].partition(":")[2])
        found.update(q["value"] for q in _QUERY_SECRET.finditer(rest))
    for m in _KV_SECRET.finditer(text):
        found.add(m["value"].strip("'\""))
    return found


def remember_secrets(value: Any) -> None:
    """Remember the passwords inside `value` (a string or a nested config) so that they are
    masked even where they appear on their own; call it once with the run's config."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            if SECRET_NAME.search(str(k)) and isinstance(v, str) and v:
                _known.add(v)
            remember_secrets(v)
        return
    if isinstance(value, list | tuple):
        for v in value:
            remember_secrets(v)
        return
    if isinstance(value, str):
        for s in _url_secrets(value):
            if len(s) >= 3:  # shorter ones would mask ordinary words
                _known.update({s, unquote(s)})


def mask_secrets(value: Any) -> str:
    """`str(value)` with every credential masked: `postgresql://u:pw@h/db` → `postgresql://u:***@h/db`."""
    text = _URL.sub(_mask_url, str(value))
    text = _KV_SECRET.sub(lambda m: m["key"] + MASK, text)
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_tree(value: Any) -> Any:
    """A copy of a nested config/record with every string masked and secret-named keys hidden."""
    if isinstance(value, Mapping):
        return {
            k: (MASK if SECRET_NAME.search(str(k)) and v not in (None, "") else mask_tree(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_tree(v) for v in value]
    if isinstance(value, str):
        return mask_secrets(value)
    return value


class SecretFilter(logging.Filter):
    """Masks credentials in every log record (message, arguments and traceback text)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is logging's to report
            return True
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


def install_log_filter() -> None:
    """Mask credentials in everything this process reports on stderr: every handler of every
    logger (root, and libraries with their own such as Optuna), Python warnings (routed through
    logging) and uncaught tracebacks. Call it after logging is set up, and again after a library
    adds its own handler."""
    logging.captureWarnings(True)
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, SecretFilter) for f in handler.filters):
                handler.addFilter(SecretFilter())
    if not getattr(sys.excepthook, "masks_secrets", False):
        sys.excepthook = _masked_excepthook


def _masked_excepthook(exc_type, exc, tb) -> None:
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(mask_secrets(text))


_masked_excepthook.masks_secrets = True  # type: ignore[attr-defined]
