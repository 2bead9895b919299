"""Rooms on this instance: the hub, each room, fan-out rounds, subscribers, the turn runner."""
