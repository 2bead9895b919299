"""Peers: minimal, honest implementations of fanout's job, one small script each.

Each serves N clients of one room and relays the same mock upstream, frame for frame, as
small JSON frames shaped like fanout's (``turn.start``, ``delta``, ``turn.end``). Run one as
``python -m bench.peers.<name> --port P --upstream-url URL --model M``.
"""
