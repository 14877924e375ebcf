"""Sparkplug B 3.0 for Derrick: topics, the payload model and its protobuf codec.

Pure: no sockets, no MQTT client. Public API::

    from core.sparkplug import (
        Topic, StateTopic, MessageType, parse_topic,           # topics (topic.py)
        Payload, Metric, DataType, ...,                        # the model (model.py)
        encode_payload, decode_payload,                        # the codec (codec.py)
        StatePayload, encode_state, decode_state,              # STATE JSON (state.py)
        SparkplugError, TopicError, PayloadError, ...,         # errors (errors.py)
    )
"""

from core.sparkplug.codec import decode_payload, encode_payload
from core.sparkplug.compression import (
    COMPRESSED_UUID,
    compress_payload,
    decompress_payload,
    is_compressed,
)
from core.sparkplug.datatypes import DataType, ValueKind
from core.sparkplug.errors import (
    PayloadDecodeError,
    PayloadEncodeError,
    PayloadError,
    SparkplugError,
    TopicError,
)
from core.sparkplug.model import (
    DataSet,
    MetaData,
    Metric,
    Payload,
    PropertySet,
    PropertySetList,
    PropertyValue,
    Template,
    TemplateParameter,
)
from core.sparkplug.state import StatePayload, decode_state, encode_state
from core.sparkplug.topic import (
    NAMESPACE,
    MessageType,
    StateTopic,
    Topic,
    edge_node_filter,
    namespace_filter,
    parse_topic,
)

__all__ = [
    "COMPRESSED_UUID",
    "NAMESPACE",
    "DataSet",
    "DataType",
    "MessageType",
    "MetaData",
    "Metric",
    "Payload",
    "PayloadDecodeError",
    "PayloadEncodeError",
    "PayloadError",
    "PropertySet",
    "PropertySetList",
    "PropertyValue",
    "SparkplugError",
    "StatePayload",
    "StateTopic",
    "Template",
    "TemplateParameter",
    "Topic",
    "TopicError",
    "ValueKind",
    "compress_payload",
    "decode_payload",
    "decode_state",
    "decompress_payload",
    "edge_node_filter",
    "encode_payload",
    "encode_state",
    "is_compressed",
    "namespace_filter",
    "parse_topic",
]
