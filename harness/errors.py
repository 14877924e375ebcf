"""The harness's exceptions.

HarnessError
├── ToolNotFoundError       a server binary, the JVM or the QuestDB jar is missing
├── ServiceStartError       a service did not start or did not become ready in time
│                           (the message carries the tail of its log)
├── ServiceNotRunningError  connection details or a restart asked of a stopped service
└── QueryError              a helper query (QuestDB.exec_sql) was rejected
"""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of every error raised by ``harness``."""


class ToolNotFoundError(HarnessError):
    """A program or file the harness needs is missing; ``./derrick bootstrap`` installs it."""


class ServiceStartError(HarnessError):
    """A service process exited during startup or did not become ready before the timeout."""


class ServiceNotRunningError(HarnessError):
    """The operation needs a running service."""


class QueryError(HarnessError):
    """A query sent through a harness helper (``QuestDB.exec_sql``) was rejected."""
