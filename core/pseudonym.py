"""Keyed pseudonyms for vendor datasets (pure).

A pseudonym is ``<kind>-<16 hex>``: the first 64 bits of HMAC-SHA256 under a key derived
from the service's secret key and the dataset's id. The same identifier gets the same
pseudonym within a dataset; without the key it cannot be recomputed (so not reversed by
hashing candidate ids), and two datasets (two vendors, two periods) cannot be joined on it.
"""

from __future__ import annotations

import hashlib
import hmac


class Pseudonymiser:
    def __init__(self, key: bytes, dataset: str) -> None:
        if len(key) < 32:
            raise ValueError("the pseudonym key must be at least 32 bytes")
        self._key = hmac.new(
            key, b"derrick-dataset\x00" + dataset.encode(), hashlib.sha256
        ).digest()

    def __repr__(self) -> str:
        return "<Pseudonymiser key=<hidden>>"

    def __call__(self, kind: str, identifier: str) -> str:
        mac = hmac.new(self._key, f"{kind}\x00{identifier}".encode(), hashlib.sha256)
        return f"{kind}-{mac.hexdigest()[:16]}"
