"""The upstream model API, reached through the official openai SDK."""
