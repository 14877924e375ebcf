"""The Sparkplug 3.0 STATE payload of a Host Application: ``{"online": bool, "timestamp": ms}``.

Published retained at QoS 1 on ``spBv1.0/STATE/<host_id>`` (see :class:`~core.sparkplug.topic.
StateTopic`) as the host's birth (``online=true``) and, as its MQTT Will, its death
(``online=false``); both carry the UTC ms timestamp of the CONNECT (specification 4.2.1,
``tck-id-host-topic-phid-birth-payload``, ``tck-id-host-topic-phid-death-payload``). It is JSON,
not protobuf, so that hosts work across Sparkplug payload formats.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from core.sparkplug.errors import PayloadDecodeError, PayloadEncodeError

__all__ = ["StatePayload", "decode_state", "encode_state"]


class StatePayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A Host Application's STATE: whether it is online, and the timestamp (UTC ms) of the
    CONNECT whose session it describes. Edge nodes compare timestamps to ignore stale STATE."""

    online: bool
    timestamp: Annotated[int, msgspec.Meta(ge=0)]


_decoder = msgspec.json.Decoder(StatePayload)
_encoder = msgspec.json.Encoder()


def encode_state(state: StatePayload) -> bytes:
    """JSON bytes of ``state`` (UTF-8), e.g. ``b'{"online":true,"timestamp":1767225600000}'``."""
    if not isinstance(state, StatePayload):
        raise PayloadEncodeError(f"expected a StatePayload, got {type(state).__name__}")
    if type(state.online) is not bool or type(state.timestamp) is not int or state.timestamp < 0:
        raise PayloadEncodeError(f"invalid STATE payload {state!r}")
    return _encoder.encode(state)


def decode_state(data: bytes) -> StatePayload:
    """Parse a STATE payload; anything but exactly ``online`` (bool) and ``timestamp``
    (non-negative int) is a :class:`PayloadDecodeError`."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise PayloadDecodeError(f"not a Sparkplug STATE payload: {exc}") from exc
