"""Derrick's dev/test service harness: real Mosquitto, QuestDB and PostgreSQL processes.

Each service starts on free loopback ports in its own directory, waits until it answers,
exposes its connection details, and never outlives the Python process that started it
(process groups, a parent-death signal, an exit hook). See ``harness.errors`` for the
exception family.
"""

from harness.errors import (
    HarnessError,
    ServiceNotRunningError,
    ServiceStartError,
    ToolNotFoundError,
)
from harness.mosquitto import Mosquitto
from harness.postgres import Postgres
from harness.questdb import SMALL_TABLES, QuestDB
from harness.stack import ServiceStack

__all__ = [
    "SMALL_TABLES",
    "HarnessError",
    "Mosquitto",
    "Postgres",
    "QuestDB",
    "ServiceNotRunningError",
    "ServiceStack",
    "ServiceStartError",
    "ToolNotFoundError",
]
