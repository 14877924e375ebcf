"""Derrick's shared leaf package.

Pure code that the edge agent, the ingest workers and the API all need: the Sparkplug B
codec and topic value objects (`core.sparkplug`), the names Derrick uses on the wire
(`core.conventions`), identifiers (`core.ids`), the sensor tag catalogue (`core.tags`) and the
QuestDB table definitions (`core.tables`). Nothing here opens a socket, starts a process or
imports a service library.
"""
