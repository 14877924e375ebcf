"""JSON log lines (``core.logformat.JsonFormatter``): one object per record with the message
formatted, the level, the logger, ``extra=`` fields and the traceback."""

from __future__ import annotations

import json
import logging
import sys

from core.logformat import JsonFormatter


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = sys.exc_info() if exc else None
    record = logging.LogRecord("ingest.host", logging.WARNING, "host.py", 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_one_json_object_per_record() -> None:
    record = _record("flush failed (%d in a row): %s", 3, "timeout", node="s1")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["level"] == "WARNING" and out["logger"] == "ingest.host"
    assert out["message"] == "flush failed (3 in a row): timeout"
    assert out["node"] == "s1"
    assert out["ts"].endswith("Z") and "T" in out["ts"]
    assert "exc" not in out and "args" not in out and "msg" not in out


def test_traceback_and_unserialisable_extras() -> None:
    try:
        raise ValueError("bad\npayload")
    except ValueError:
        line = JsonFormatter().format(_record("decode failed", exc=True, topic=object()))
    assert "\n" not in line
    out = json.loads(line)
    assert "ValueError: bad" in out["exc"]
    assert out["topic"].startswith("<object object")
