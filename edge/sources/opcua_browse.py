"""Browse an OPC UA server and propose the device's sensor mapping (node id → tag, unit).

A variable is proposed for a tag when its browse name, or the last ``.``-separated part of
its string node id, is the tag's mnemonic (case-insensitive: ``WOB``, ``Rig.WOB``); the
unit is the tag's (the fleet's one unit per tag). Numeric variables that match no tag are
listed as comments, for a person to map. Each tag is proposed at most once (the first
match in browse order).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import msgspec
from asyncua import ua
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError

from core.tags import TAGS
from edge.config import OpcUaDevice
from edge.sources.opcua import opcua_client

_NUMERIC = {
    ua.VariantType.Double, ua.VariantType.Float, ua.VariantType.Int16, ua.VariantType.Int32,
    ua.VariantType.Int64, ua.VariantType.UInt16, ua.VariantType.UInt32, ua.VariantType.UInt64,
    ua.VariantType.Byte, ua.VariantType.SByte,
}  # fmt: skip


class BrowseError(Exception):
    """The server cannot be browsed (unreachable, refused the connection)."""


class Proposal(msgspec.Struct, frozen=True):
    node_id: str
    browse_name: str
    tag: str | None


def match_tag(browse_name: str, node_id: str) -> str | None:
    for candidate in (browse_name, node_id.rsplit(";s=", 1)[-1].rsplit(".", 1)[-1]):
        if candidate.upper() in TAGS:
            return candidate.upper()
    return None


async def browse(device: OpcUaDevice, *, max_depth: int = 6) -> list[Proposal]:
    """Numeric variables under the server's Objects folder, skipping the Server object."""
    client = await opcua_client(device)
    found: list[Proposal] = []
    try:
        async with client:
            server_node = client.nodes.server.nodeid
            await _walk(client.nodes.objects, server_node, max_depth, found)
    except (OSError, TimeoutError, UaError) as exc:
        raise BrowseError(f"cannot browse {device.endpoint}: {exc}") from exc
    return found


async def _walk(node: Node, skip: ua.NodeId, depth: int, found: list[Proposal]) -> None:
    if depth < 0:
        return
    for child in await node.get_children():
        if child.nodeid == skip:
            continue
        node_class = await child.read_node_class()
        if node_class == ua.NodeClass.Variable:
            variant = await child.read_data_type_as_variant_type()
            if variant in _NUMERIC:
                name = (await child.read_browse_name()).Name or ""
                node_id = child.nodeid.to_string()
                found.append(Proposal(node_id, name, match_tag(name, node_id)))
        elif node_class == ua.NodeClass.Object:
            await _walk(child, skip, depth - 1, found)


def proposal_toml(device_id: str, endpoint: str, proposals: Sequence[Proposal]) -> str:
    """A ``[[devices]]`` block for the agent's config, unmatched variables as comments."""
    q = json.dumps
    lines = ["[[devices]]", f"id = {q(device_id)}", 'source = "opcua"', f"endpoint = {q(endpoint)}",
             "sensors = ["]  # fmt: skip
    seen: set[str] = set()
    unmatched = []
    for p in proposals:
        if p.tag is None or p.tag in seen:
            unmatched.append(p)
            continue
        seen.add(p.tag)
        unit = TAGS[p.tag].unit
        lines.append(f"  {{tag = {q(p.tag)}, unit = {q(unit)}, node_id = {q(p.node_id)}}},")
    lines.append("]")
    lines += [f"# not mapped: {p.node_id} ({p.browse_name})" for p in unmatched]
    return "\n".join(lines) + "\n"
