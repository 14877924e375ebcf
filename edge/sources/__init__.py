"""Sensor sources the edge agent reads: the drilling-rig simulator (local channels) for now."""
