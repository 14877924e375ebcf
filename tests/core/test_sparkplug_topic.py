"""Sparkplug topics: construction, validation, wire form and parsing (spec chapter 4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.sparkplug import (
    MessageType,
    SparkplugError,
    StateTopic,
    Topic,
    TopicError,
    edge_node_filter,
    namespace_filter,
    parse_topic,
)

NODE_TYPES = [MessageType.NBIRTH, MessageType.NDEATH, MessageType.NDATA, MessageType.NCMD]
DEVICE_TYPES = [MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD]

# valid ids: any non-empty UTF-8 text (no surrogates) without + / # and NUL
ids = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="+/#\x00"),
    min_size=1,
    max_size=20,
)


@pytest.mark.tck(
    "tck-id-topic-structure",
    "tck-id-topic-structure-namespace-a",
    "tck-id-topics-nbirth-topic",
    "tck-id-topics-ndeath-topic",
    "tck-id-topics-ndata-topic",
    "tck-id-topics-ncmd-topic",
)
@pytest.mark.parametrize("message_type", NODE_TYPES)
def test_node_topic_wire_form(message_type: MessageType) -> None:
    topic = Topic(message_type, "s017", "s017-a042")
    assert str(topic) == f"spBv1.0/s017/{message_type}/s017-a042"
    assert parse_topic(str(topic)) == topic
    assert Topic.parse(str(topic)) == topic


@pytest.mark.tck(
    "tck-id-topic-structure",
    "tck-id-topics-dbirth-topic",
    "tck-id-topics-ddeath-topic",
    "tck-id-topics-ddata-topic",
    "tck-id-topics-dcmd-topic",
)
@pytest.mark.parametrize("message_type", DEVICE_TYPES)
def test_device_topic_wire_form(message_type: MessageType) -> None:
    topic = Topic(message_type, "s017", "s017-a042", "daq")
    assert str(topic) == f"spBv1.0/s017/{message_type}/s017-a042/daq"
    assert parse_topic(str(topic)) == topic


@pytest.mark.tck("tck-id-host-topic-phid-birth-topic", "tck-id-host-topic-phid-death-topic")
def test_state_topic() -> None:
    topic = StateTopic("derrick")
    assert str(topic) == "spBv1.0/STATE/derrick"
    assert parse_topic("spBv1.0/STATE/derrick") == topic
    assert StateTopic.parse("spBv1.0/STATE/derrick") == topic
    with pytest.raises(TopicError, match="expected a STATE topic"):
        StateTopic.parse("spBv1.0/g/NDATA/e")
    with pytest.raises(TopicError, match="got STATE topic"):
        Topic.parse("spBv1.0/STATE/derrick")


def test_group_named_state_is_still_a_node_topic() -> None:
    assert parse_topic("spBv1.0/STATE/NDATA/e") == Topic(MessageType.NDATA, "STATE", "e")


@pytest.mark.tck("tck-id-topic-structure-namespace-device-id-associated-message-types")
@pytest.mark.parametrize("message_type", DEVICE_TYPES)
def test_device_types_require_device_id(message_type: MessageType) -> None:
    with pytest.raises(TopicError, match=f"{message_type} requires a device_id"):
        Topic(message_type, "g", "e")
    with pytest.raises(TopicError, match="requires a device_id"):
        parse_topic(f"spBv1.0/g/{message_type}/e")


@pytest.mark.tck("tck-id-topic-structure-namespace-device-id-non-associated-message-types")
@pytest.mark.parametrize("message_type", NODE_TYPES)
def test_node_types_forbid_device_id(message_type: MessageType) -> None:
    with pytest.raises(TopicError, match=f"{message_type} must not have a device_id"):
        Topic(message_type, "g", "e", "d")
    with pytest.raises(TopicError, match="must not have a device_id"):
        parse_topic(f"spBv1.0/g/{message_type}/e/d")


@pytest.mark.tck(
    "tck-id-topic-structure-namespace-valid-group-id",
    "tck-id-topic-structure-namespace-valid-edge-node-id",
    "tck-id-topic-structure-namespace-valid-device-id",
    "tck-id-intro-group-id-string",
    "tck-id-intro-group-id-chars",
    "tck-id-intro-edge-node-id-string",
    "tck-id-intro-edge-node-id-chars",
    "tck-id-intro-device-id-string",
    "tck-id-intro-device-id-chars",
)
@pytest.mark.parametrize("bad", ["", "a+b", "a/b", "a#b", "a\x00b", "\udc80", 17])
@pytest.mark.parametrize("part", ["group_id", "edge_node_id", "device_id"])
def test_invalid_ids_are_rejected_naming_the_part(part: str, bad: object) -> None:
    fields: dict[str, object] = {"group_id": "g", "edge_node_id": "e", "device_id": "d"}
    fields[part] = bad
    with pytest.raises(TopicError, match=part) as caught:
        Topic(MessageType.DDATA, **fields)  # type: ignore[arg-type]
    assert isinstance(caught.value, SparkplugError)
    assert isinstance(caught.value, ValueError)
    assert "spBv1.0/" in str(caught.value)  # says where


@pytest.mark.parametrize("bad", ["", "a+b", "a/b", "a#b"])
def test_invalid_host_id(bad: str) -> None:
    with pytest.raises(TopicError, match="host_id"):
        StateTopic(bad)


@pytest.mark.tck("tck-id-topic-structure-namespace-a")
@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("spAv1.0/g/NDATA/e", "namespace 'spAv1.0'"),
        ("spBv1.0/g/NDATA", "3 levels"),
        ("spBv1.0/g/DDATA/e/d/x", "6 levels"),
        ("spBv1.0/g/XDATA/e", "message type 'XDATA'"),
        ("spBv1.0/g/ndata/e", "message type 'ndata'"),
        ("spBv1.0//NDATA/e", "group_id is empty"),
        ("spBv1.0/g/NDATA/", "edge_node_id is empty"),
        ("spBv1.0/g/DDATA/e/", "device_id is empty"),
        ("spBv1.0/STATE/", "host_id is empty"),
        ("STATE/derrick", "namespace 'STATE'"),  # Sparkplug 2.2 STATE topic
        ("spBv1.0/g/+/e", "message type '\\+'"),
        ("", "namespace ''"),
    ],
)
def test_parse_rejects(topic: str, message: str) -> None:
    with pytest.raises(TopicError, match=message):
        parse_topic(topic)


def test_message_type_from_string_and_immutability() -> None:
    topic = Topic("NDATA", "g", "e")  # type: ignore[arg-type]
    assert topic.message_type is MessageType.NDATA
    with pytest.raises(AttributeError):
        topic.group_id = "other"  # type: ignore[misc]
    assert hash(topic) == hash(Topic(MessageType.NDATA, "g", "e"))
    assert [t.is_device for t in MessageType] == [t.value.startswith("D") for t in MessageType]


@given(
    message_type=st.sampled_from(list(MessageType)),
    group_id=ids,
    edge_node_id=ids,
    device_id=ids,
)
def test_round_trip_any_valid_ids(
    message_type: MessageType, group_id: str, edge_node_id: str, device_id: str
) -> None:
    topic = Topic(
        message_type, group_id, edge_node_id, device_id if message_type.is_device else None
    )
    assert parse_topic(str(topic)) == topic


@given(host_id=ids)
def test_state_round_trip_any_valid_id(host_id: str) -> None:
    assert parse_topic(str(StateTopic(host_id))) == StateTopic(host_id)


def test_subscription_filters() -> None:
    assert namespace_filter() == "spBv1.0/#"
    assert namespace_filter("s017") == "spBv1.0/s017/#"
    assert edge_node_filter("s017", "s017-a042") == "spBv1.0/s017/+/s017-a042/#"
    with pytest.raises(TopicError):
        edge_node_filter("s+", "e")
