"""Remove secrets from text that may reach clients or logs."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Things that look like credentials whatever the provider: OpenAI-style keys, bearer tokens,
# and key=value pairs in URLs or messages.
_PATTERNS = (
    re.compile(r"\b(?:sk|rk|pk)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]+=*"),
    re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|token|secret)=([^\s&\"']+)"),
)

MAX_MESSAGE_CHARS = 500


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with known secrets and credential-shaped strings replaced, bounded."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    text = _PATTERNS[0].sub("[redacted]", text)
    text = _PATTERNS[1].sub("Bearer [redacted]", text)
    text = _PATTERNS[2].sub(r"\1=[redacted]", text)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text
