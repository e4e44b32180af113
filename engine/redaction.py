"""Keeping secrets out of logs: a scrub applied to every log record the process makes.

It removes the exact secrets registered with ``register_secret`` (the vault registers every
provider key it encrypts or decrypts) and anything shaped like a vendor key or an
``Authorization`` value. ``engine`` installs it on import, so every entry point (the UI, the
sidecar, the CLI) has it before it logs anything. Standard library only: it loads with the
package and costs nothing until a record is made.
"""

from __future__ import annotations

import logging
import re
import threading

REDACTED = "[REDACTED]"
# Shapes of vendor keys and credentials in headers or reprs; the value part is replaced.
SECRET_PATTERNS = [
    re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"\bsk_[A-Za-z0-9]{16,}"),
    re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"),
    re.compile(r"\b(?:gsk|xai|hf|r8)[_-][A-Za-z0-9]{16,}"),
    # "Bearer <token>" and fal's "Key <token>"; the token must contain a digit, so prose survives.
    re.compile(r"(?<=\bBearer )(?=\S*\d)[A-Za-z0-9._~+/:=\-]{8,}", re.IGNORECASE),
    re.compile(r"(?<=\bKey )(?=\S*\d)[A-Za-z0-9._~+/:=\-]{8,}"),
    # api_key=…, "api-key": "…", x-api-key: …, xi-api-key: …, x-goog-api-key: …
    re.compile(r"(?i)(?<=api[_-]key)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]{8,}"),
]
MIN_REGISTERED_LENGTH = 8

_known: set[str] = set()
_known_re: re.Pattern[str] | None = None
_known_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Scrub this exact value from every later log record (done for every key the vault handles)."""
    global _known_re
    if not value or len(value) < MIN_REGISTERED_LENGTH or value in _known:
        return
    with _known_lock:
        _known.add(value)
        alternatives = sorted(_known, key=len, reverse=True)
        _known_re = re.compile("|".join(re.escape(v) for v in alternatives))


def redact(text: str) -> str:
    known = _known_re
    if known is not None:
        text = known.sub(REDACTED, text)
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.lastindex else "") + REDACTED, text)
    return text


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # mismatched %-args: logging would report it at emit time; keep both parts
        message = f"{record.msg} {record.args!r}"
    record.msg = redact(message)
    record.args = None
    if record.exc_info:
        # Rendered now and redacted; the live exception (whose args may hold the key) is dropped
        # so that no formatter or handler can render it again unredacted.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


class RedactionFilter(logging.Filter):
    """The same scrub as a filter, for handlers fed records not made by the logging module."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


_installed = False


def install_redaction() -> None:
    """Scrub secrets from every log record this process makes, whichever logger or handler.

    A filter on the root logger alone would miss records from child loggers (filters do not
    apply to propagated records), so the scrub runs in the log record factory, which makes
    every record; the filter is also put on the root logger for records made by hand.
    """
    global _installed
    with _known_lock:
        if _installed:
            return
        make_record = logging.getLogRecordFactory()

        def redacting_factory(*args, **kwargs) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(redacting_factory)
        logging.getLogger().addFilter(RedactionFilter())
        _installed = True
