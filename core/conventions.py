"""Names Derrick puts on the Sparkplug wire, in one place.

The edge agent declares these in its NBIRTH; the Primary Host (ingest) writes to them with
NCMD. Other Sparkplug hosts see ordinary, documented node metrics.
"""

from __future__ import annotations

from typing import Final

#: Default Primary Host id (``spBv1.0/STATE/<host_id>``).
DEFAULT_PRIMARY_HOST_ID: Final = "derrick"

#: The Sparkplug node-control metric every edge node declares (spec 3.0, mandatory).
REBIRTH_METRIC: Final = "Node Control/Rebirth"

#: Cumulative end-to-end acknowledgement: the host writes the highest batch number below
#: which (inclusive) every batch of the node is committed in QuestDB. UInt64.
ACKED_BATCH_METRIC: Final = "Derrick/Acked Batch"

#: The oldest batch the node still holds (UInt64). Batches below it that the host never
#: committed were evicted by the node's size cap: the host may advance past them.
OLDEST_BATCH_METRIC: Final = "Derrick/Oldest Batch"

#: The identity of the node's queue (UInt64, random, made when the queue file is created):
#: a different one in an NBIRTH means batch numbers started again (a reinstalled
#: appliance), and the host restarts its acknowledgement frontier for the node.
QUEUE_ID_METRIC: Final = "Derrick/Queue Id"

#: Cloud-commanded alarm sampling: the host (or an operator) writes true/false. Boolean.
ALARM_COMMAND_METRIC: Final = "Derrick/Alarm Mode"

#: Node status metrics published in NBIRTH and NDATA.
QUEUE_DEPTH_METRIC: Final = "Derrick/Queue Depth"
QUEUE_OLDEST_AGE_METRIC: Final = "Derrick/Oldest Unacked Age ms"
REPLAY_BACKLOG_METRIC: Final = "Derrick/Replay Backlog"
EVICTIONS_METRIC: Final = "Derrick/Evictions"
SAMPLING_MODE_METRIC: Final = "Derrick/Sampling Mode"
AGENT_VERSION_METRIC: Final = "Derrick/Agent Version"

#: Metric property keys (Sparkplug PropertySet) carried in births.
PROP_ENG_UNIT: Final = "engUnit"
PROP_HOT: Final = "hot"
PROP_QUALITY: Final = "Quality"

#: Sparkplug ``Quality`` values (Int32). Data metrics carry the property only when not good;
#: the ingest stores only good values as readings and counts the others.
QUALITY_GOOD: Final = 192
QUALITY_STALE: Final = 500
QUALITY_BAD: Final = 0

#: Metric property on data metrics whose source timestamp is finer than a millisecond
#: (legacy readings stored in nanoseconds): the sub-millisecond part, UInt32 0–999999. The
#: exact source time is ``timestamp`` × 1,000,000 + ``tsNanos`` nanoseconds since the epoch.
#: Hosts that do not know it still get the timestamp truncated to the millisecond.
PROP_TS_NANOS: Final = "tsNanos"
