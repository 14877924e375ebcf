"""The exceptions of ``core.sparkplug``: one family, rooted at :class:`SparkplugError`.

::

    SparkplugError
    ├── TopicError            (also a ValueError) a topic string or topic part breaks the rules
    └── PayloadError          (also a ValueError) a payload or a value in it breaks the rules
        ├── PayloadDecodeError    bytes from the wire: not protobuf, or a value that does not
        │                         fit its datatype (datatype 99, a double in int_value,
        │                         truncated array bytes, ...)
        └── PayloadEncodeError    a model object we were asked to send: a value that does not
                                  fit its datatype (300 as Int8, a str as Double, ...)

Catch :class:`PayloadDecodeError` around ``decode_payload`` to dead-letter one bad message
and carry on; catch :class:`SparkplugError` to handle everything this package raises. The
message names what is wrong and where (``metric 3 (alias 17): ...``); the location alone is
also in :attr:`PayloadError.where`, so dead-letter records can index it.
"""

from __future__ import annotations

__all__ = [
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "SparkplugError",
    "TopicError",
]


class SparkplugError(Exception):
    """Base class of every error raised by ``core.sparkplug``."""


class TopicError(SparkplugError, ValueError):
    """A Sparkplug topic, or one of its parts, is not valid."""


class PayloadError(SparkplugError, ValueError):
    """A Sparkplug payload, or a value in it, is not valid.

    ``where`` locates the problem inside the payload (for example
    ``"metric 3 (alias 17) > template metric 0 (name 'RPM')"``), or is ``None`` when the
    payload as a whole is wrong.
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message)
        self.reason = message
        self.where = where

    def located(self, outer: str) -> PayloadError:
        """The same error, one nesting level further out (``outer > where``)."""
        where = f"{outer} > {self.where}" if self.where else outer
        return type(self)(self.reason, where=where)


class PayloadDecodeError(PayloadError):
    """Bytes received from the wire are not a valid Sparkplug B payload."""


class PayloadEncodeError(PayloadError):
    """A payload model cannot be encoded as a valid Sparkplug B payload."""
