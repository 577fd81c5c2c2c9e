r"""Credentials never leave the process: every URL-shaped value is masked before it is printed,
logged, tagged or written.

Masking parses URLs, so it covers any URL in any config key (storage, tracking, or a key added
later) in every form the audits found: `u:pw@host`, `://:pw@host`, a password holding `/`, `@`,
quotes or `<` (`u:se/cret@host`, `u:se@cret@host`, `u:it's@host`), Hydra's escaped form
(`postgresql\://u\:pw@host`), and query parameters such as `?password=pw`. The userinfo of a
URL ends at the *last* `@` of its token (as `urllib.parse` reads it), so a password with an `@`
is masked whole. Passwords seen in the resolved config are also remembered (`remember_secrets`,
called before anything is logged) with the forms they take when escaped (Hydra, JSON, YAML,
Python repr, percent-encoding) and replaced literally wherever they turn up, e.g. inside a
driver's error message or in a password that holds a space.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

__all__ = [
    "MASK",
    "SecretFilter",
    "install_log_filter",
    "mask_secrets",
    "mask_tree",
    "remember_secrets",
]

MASK = "***"

#: `scheme://` (Hydra escapes it as `scheme\://`) and the rest of one whitespace-delimited token:
#: quotes and `<` may be part of a password, so they do not end it
_URL = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*\\?://)(?P<rest>\S*)")
#: a whole config value that is one URL (its password may even hold a space)
#: (or an override `key=URL`, `key='URL'`)
_WHOLE_URL = re.compile(
    r"^\s*(?:[\w.+~/-]+=)?(?P<q>['\"]?)[A-Za-z][\w+.-]*\\?://(?P<rest>.*?)(?P=q)\s*$", re.DOTALL
)
#: names whose values are secrets, in query strings and as config keys
SECRET_NAME = re.compile(
    r"(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|credential)", re.IGNORECASE
)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&;][^=&;\s#]*(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key"
    r"|credential)[^=&;\s#]*=)(?P<value>[^&;\s#]*)",  # quotes may be part of it
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


def _userinfo_secret(rest: str) -> str | None:
    """The password in `user:password@host…` (the part after `scheme://`), if any."""
    at = rest.rfind("@")
    if at >= 0 and ":" in rest[:at]:
        return rest[:at].partition(":")[2]
    return None


def _url_secrets(text: str) -> set[str]:
    found = set()
    whole = _WHOLE_URL.match(text)
    rests = [whole["rest"]] if whole else []
    rests += [m["rest"] for m in _URL.finditer(text)]
    for rest in rests:
        if (secret := _userinfo_secret(rest)) is not None:
            found.add(secret)
            found.add(re.sub(r"\\(.)", r"\1", secret))  # Hydra's escapes undone
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
                _known.update(_escaped_forms(s) | _escaped_forms(unquote(s)))


#: characters Hydra escapes with a backslash when it prints an override (its launcher log)
_HYDRA_SPECIAL = "\\()[]{}:=, \t"


def _escaped_forms(secret: str) -> set[str]:
    """`secret` as it appears once escaped by Hydra's launcher log, JSON, YAML, repr or a URL."""
    hydra = "".join(f"\\{c}" if c in _HYDRA_SPECIAL else c for c in secret)
    forms = {
        secret,
        hydra,
        json.dumps(secret)[1:-1],
        repr(secret)[1:-1],
        secret.replace("'", "''"),  # YAML single-quoted
        quote(secret, safe=""),
        secret.replace("'", "\\'").replace('"', '\\"'),  # shell / Hydra quoted-string escapes
    }
    return {f for f in forms if len(f) >= 3}


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
        _mask_record(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


def install_log_filter() -> None:
    """Mask credentials in everything this process reports on stderr: every handler of every
    logger (root, and libraries with their own such as Optuna), Python warnings (routed through
    logging) and uncaught tracebacks. Call it after logging is set up, and again after a library
    adds its own handler."""
    logging.captureWarnings(True)
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "masks_secrets", False):  # every record, whatever handler it meets
        logging.setLogRecordFactory(_masking_factory(factory))
    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, SecretFilter) for f in handler.filters):
                handler.addFilter(SecretFilter())
    if not getattr(sys.excepthook, "masks_secrets", False):
        sys.excepthook = _masked_excepthook


def _masking_factory(make: Any) -> Any:
    """A log-record factory that masks each record's message as it is made: handlers that a
    library installs later (Hydra configures logging again for every sweep and job) still only
    ever see masked text."""

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        _mask_record(record)
        return record

    factory.masks_secrets = True  # type: ignore[attr-defined]
    return factory


def _mask_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record is logging's to report
        return
    masked = mask_secrets(message)
    if masked != message:
        record.msg, record.args = masked, None


def _masked_excepthook(exc_type, exc, tb) -> None:
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(mask_secrets(text))


_masked_excepthook.masks_secrets = True  # type: ignore[attr-defined]
