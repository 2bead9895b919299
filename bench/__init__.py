"""Benchmarks: fanout against peer servers, scale-out over Redis, and the long-line decoder."""
