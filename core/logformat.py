"""Log formats of the service entrypoints: the human one and JSON lines (``--log-format json``).

:class:`JsonFormatter` writes one JSON object per record: ``ts`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger``, ``message`` (the formatted message), ``exc`` (the
traceback, when there is one) and any ``extra=`` fields the call passed. It formats only what
the call site logged: the rule that secrets never reach a log holds as before.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Final, Literal

import msgspec

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has; anything else came from ``extra=``.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
_encoder = msgspec.json.Encoder(enc_hook=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return _encoder.encode(out).decode()


def configure_logging(level: str | int, log_format: LogFormat = "text") -> None:
    """Configure the root logger once, in an entrypoint (stderr)."""
    logging.basicConfig(level=level, format=TEXT_FORMAT)
    if log_format == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
