"""Sparkplug B 3.0 topics as immutable values that check themselves (specification chapter 4).

::

    spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>]   -> Topic
    spBv1.0/STATE/<host_id>                                           -> StateTopic

Build topics with ``Topic(...)`` / ``StateTopic(...)`` and turn them into wire strings with
``str()``; turn wire strings into topics with :func:`parse_topic` (or ``Topic.parse`` /
``StateTopic.parse`` when only one kind is acceptable). Never assemble or split topic strings
anywhere else. Every id must be a non-empty string that is valid UTF-8 and contains none of
``+``, ``/``, ``#`` (Sparkplug's reserved characters) nor U+0000 (forbidden by MQTT).
Invalid input raises :class:`~core.sparkplug.errors.TopicError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from core.sparkplug.errors import TopicError

__all__ = [
    "NAMESPACE",
    "MessageType",
    "StateTopic",
    "Topic",
    "edge_node_filter",
    "namespace_filter",
    "parse_topic",
]

NAMESPACE = "spBv1.0"
_STATE = "STATE"
_RESERVED = frozenset("+/#\x00")
# a reserved character, or a lone surrogate (the only str content that is not valid UTF-8)
_INVALID = re.compile("[+/#\x00\ud800-\udfff]")


class MessageType(StrEnum):
    """The message_type element of an edge node or device topic."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"

    @property
    def is_device(self) -> bool:
        """True for the D* types, whose topics carry a device_id."""
        return self in _DEVICE_TYPES


_DEVICE_TYPES = frozenset(
    {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}
)
_MESSAGE_TYPES: dict[object, MessageType] = {m.value: m for m in MessageType}


def _check_id(what: str, value: object, where: Callable[[], str]) -> None:
    if type(value) is str and value and _INVALID.search(value) is None:
        return  # the fast path: every valid id
    if not isinstance(value, str):
        raise TopicError(f"{what} must be a str, got {type(value).__name__} in {where()}")
    if not value:
        raise TopicError(f"{what} is empty in {where()}")
    bad = _RESERVED.intersection(value)
    if bad:
        shown = ", ".join(repr(c) for c in sorted(bad))
        raise TopicError(f"{what} {value!r} contains reserved character(s) {shown} in {where()}")
    raise TopicError(f"{what} {value!r} is not valid UTF-8 (lone surrogate) in {where()}")


@dataclass(frozen=True, slots=True)
class Topic:
    """An edge node or device topic: ``spBv1.0/group/TYPE/edge_node[/device]``.

    ``device_id`` is required for DBIRTH, DDEATH, DDATA, DCMD and forbidden for the N* types.
    ``message_type`` may be given as a string (``"NDATA"``); it is stored as a MessageType.
    """

    message_type: MessageType
    group_id: str
    edge_node_id: str
    device_id: str | None = None

    def __post_init__(self) -> None:
        try:
            message_type = _MESSAGE_TYPES.get(self.message_type)
        except TypeError:  # unhashable
            message_type = None
        if message_type is None:
            raise TopicError(
                f"message type {self.message_type!r} is not one of "
                f"{', '.join(MessageType)} in {self._where()}"
            )
        if message_type is not self.message_type:
            object.__setattr__(self, "message_type", message_type)
        _check_id("group_id", self.group_id, self._where)
        _check_id("edge_node_id", self.edge_node_id, self._where)
        if message_type.is_device:
            if self.device_id is None:
                raise TopicError(f"{message_type} requires a device_id in {self._where()}")
            _check_id("device_id", self.device_id, self._where)
        elif self.device_id is not None:
            raise TopicError(f"{message_type} must not have a device_id in {self._where()}")

    def _where(self) -> str:
        parts = (NAMESPACE, self.group_id, self.message_type, self.edge_node_id, self.device_id)
        return "topic " + "/".join(str(part) for part in parts if part is not None)

    def __str__(self) -> str:
        head = f"{NAMESPACE}/{self.group_id}/{self.message_type.value}/{self.edge_node_id}"
        return head if self.device_id is None else f"{head}/{self.device_id}"

    @classmethod
    def parse(cls, topic: str) -> Topic:
        """Parse an edge node or device topic; a STATE topic is a TopicError here."""
        parsed = parse_topic(topic)
        if not isinstance(parsed, Topic):
            raise TopicError(f"expected an edge node or device topic, got STATE topic {topic!r}")
        return parsed


@dataclass(frozen=True, slots=True)
class StateTopic:
    """A Sparkplug Host Application's STATE topic: ``spBv1.0/STATE/<host_id>``."""

    host_id: str

    def __post_init__(self) -> None:
        _check_id("host_id", self.host_id, lambda: f"topic {NAMESPACE}/{_STATE}/{self.host_id}")

    def __str__(self) -> str:
        return f"{NAMESPACE}/{_STATE}/{self.host_id}"

    @classmethod
    def parse(cls, topic: str) -> StateTopic:
        """Parse a STATE topic; an edge node or device topic is a TopicError here."""
        parsed = parse_topic(topic)
        if not isinstance(parsed, StateTopic):
            raise TopicError(f"expected a STATE topic, got {topic!r}")
        return parsed


def parse_topic(topic: str) -> Topic | StateTopic:
    """Parse any Sparkplug B topic string received from MQTT."""
    if not isinstance(topic, str):
        raise TopicError(f"topic must be a str, got {type(topic).__name__}")
    parts = topic.split("/")
    if parts[0] != NAMESPACE:
        raise TopicError(f"namespace {parts[0]!r} is not {NAMESPACE!r} in topic {topic!r}")
    if len(parts) == 3 and parts[1] == _STATE:
        return StateTopic(parts[2])
    if len(parts) not in (4, 5):
        raise TopicError(
            f"topic {topic!r} has {len(parts)} levels; expected "
            f"namespace/group_id/message_type/edge_node_id[/device_id] or {NAMESPACE}/STATE/host_id"
        )
    return Topic(
        parts[2],  # type: ignore[arg-type]  # validated and converted in __post_init__
        parts[1],
        parts[3],
        parts[4] if len(parts) == 5 else None,
    )


def namespace_filter(group_id: str | None = None) -> str:
    """Subscription filter for every Sparkplug B message, or for one group's messages."""
    if group_id is None:
        return f"{NAMESPACE}/#"
    _check_id("group_id", group_id, lambda: "namespace filter")
    return f"{NAMESPACE}/{group_id}/#"


def edge_node_filter(group_id: str, edge_node_id: str) -> str:
    """Subscription filter for every message of one edge node and its devices."""
    _check_id("group_id", group_id, lambda: "edge node filter")
    _check_id("edge_node_id", edge_node_id, lambda: "edge node filter")
    return f"{NAMESPACE}/{group_id}/+/{edge_node_id}/#"
