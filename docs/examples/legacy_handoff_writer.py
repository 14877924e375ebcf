"""Reference writer of a Derrick legacy hand-off file (``docs/legacy-handoff.md``).

Runs on the legacy appliances' own Python 3.5 (no f-strings, no annotations). The file is
written under a temporary name, fsynced and renamed into place, so a crash never leaves a
half-written file under the final name (and a cut-short copy lacks the end line)::

    with HandoffWriter(path, "s017-a042", "v2.3", "ms") as out:
        for ts, tag, value in unsent_rows:
            out.add("daq", tag, ts_ns_from_real_seconds(ts), value)
"""

import gzip
import json
import os

FORMAT = "derrick-legacy-handoff"


def ts_ns_from_seconds(epoch_s):
    """v1.x CSV spool: integer epoch seconds."""
    return int(epoch_s) * 10**9


def ts_ns_from_real_seconds(ts):
    """v2.x SQLite ``ts REAL``: epoch seconds with a millisecond fraction, rounded to the ms."""
    return round(ts * 1000) * 10**6  # an int on Python 3


def ts_ns_from_ms(t):
    """v3.x JSONL ``t``: epoch milliseconds."""
    return int(t) * 10**6


def v1_value(raw_count, scale, offset):
    """v1.x raw counts to engineering units."""
    return raw_count * scale + offset


class HandoffWriter:
    """Writes the header, one line per reading, then the end line on a clean exit."""

    def __init__(self, path, appliance, source_version, precision, compress=False):
        self.path = path
        self.readings = 0
        self._tmp = path + ".tmp"
        if compress:
            self._file = gzip.open(self._tmp, "wt", encoding="utf-8")  # noqa: SIM115
        else:
            self._file = open(self._tmp, "w", encoding="utf-8")  # noqa: SIM115
        self._line(
            {
                "format": FORMAT,
                "version": 1,
                "appliance": appliance,
                "source_version": source_version,
                "precision": precision,
            }
        )

    def _line(self, obj):
        self._file.write(json.dumps(obj, allow_nan=False, separators=(",", ":")) + "\n")

    def add(self, device, tag, ts_ns, value, unit=None):
        reading = {"device": device, "tag": tag, "ts_ns": int(ts_ns), "value": float(value)}
        if unit is not None:
            reading["unit"] = unit
        self._line(reading)
        self.readings += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._file.close()
            os.remove(self._tmp)
            return False
        self._line({"end": FORMAT, "readings": self.readings})
        self._file.close()
        with open(self._tmp, "rb") as written:
            os.fsync(written.fileno())
        os.rename(self._tmp, self.path)
        return False
