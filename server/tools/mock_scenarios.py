"""What the mock upstream reads and says: chat request parsing, answers and per-model scenarios.

Everything here is a pure function of the request, so tests can compute the expected text
and two runs of a load test see the same bytes. Tokens are words with their leading space,
which is close enough to a real tokenizer for pacing and ``max_tokens`` to feel right. The
Responses API plans its answers here too (``plan_choice``, choice 0), so a scenario says the
same text in either API; its body is read by ``mock_responses_request``.
"""

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

MODELS = (
    "mock",
    "mock-tools",
    "mock-reasoning",
    "mock-refusal",
    "mock-error",
    "mock-truncate",
    "mock-incomplete",
    "mock-429",
    "mock-500",
    "mock-long",
    "mock-stamp",
    "mock-flood",
)
DEFAULT_MODEL = "mock"
MAX_CHOICES = 8
# Fixed rather than time.time() so that responses are byte-for-byte reproducible.
CREATED = 1_763_740_800
# How many tokens mock-error and mock-truncate send before they go wrong, and mock-incomplete
# before it stops as if it had reached the request's token limit.
BROKEN_AFTER = 5
STREAM_ERROR_MESSAGE = "The server had an error while processing your request."
TOOL_ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
REFUSAL = "I'm sorry, but I can't help with that."
THOUGHT = (
    "Let me think. The user wants an answer, and a deterministic mock answer fits best; "
    "keep it short and friendly."
)

# A prime count, so any stride from the hash walks the whole pool without repeating.
_POOL = (
    "The café on the corner serves a naïve but honest espresso.",
    "Every stream begins with a role and ends with a reason — always.",
    "Tokens arrive one by one, like rain on a tin roof ☔.",
    "Our rocket 🚀 leaves at dawn and never looks back.",
    "A résumé of this answer would fit on a single line.",
    "Fan-out means one upstream request and many happy viewers 👀.",
    "The jalapeño soup was spicy, so we ordered crème brûlée.",
    "Determinism makes tests boring, and boring tests are good tests ✅.",
    "Über-long answers get trimmed when max_tokens says so.",
    "Slow writes should never make the schedule drift by even a µs.",
    "The façade hides a small and patient event loop.",
    "Say こんにちは to the mock and it answers 你好 right back.",
    "Nothing here is real, yet every byte is chosen with care ✨.",
)
_MIN_TOKENS = 40
# Load-test models: ``mock-long-<N>`` answers with N plain word tokens, ``mock-stamp-<N>``
# with N tokens that each carry the mock's send time (``stamp_token``), so a client on the
# same clock can measure delivery latency, and ``mock-flood-<N>`` with N chunks of about
# FLOOD_CHUNK_CHARS characters written as fast as possible whatever the pacing (to fill a
# slow reader's buffers quickly). Without ``-<N>`` they send LONG_DEFAULT_TOKENS.
FLOOD_CHUNK_CHARS = 1000
LONG_DEFAULT_TOKENS = 1000
LONG_MAX_TOKENS = 100_000
_SIZED = re.compile(r"mock-(long|stamp|flood)(?:-(\d{1,9}))?")
SizedKind = Literal["long", "stamp", "flood"]
_SNIPPET_CHARS = 40
# Like OpenAI's: many small fragments, some cutting words in two, none valid JSON alone.
ARGUMENT_FRAGMENTS = tuple(re.findall(r"\W+|\w{1,4}", TOOL_ARGUMENTS))

Field = Literal["content", "reasoning_content", "refusal", "arguments"]
Ending = Literal["normal", "error", "truncate"]


def tokenize(text: str) -> tuple[str, ...]:
    """Split text into word tokens, each keeping its leading whitespace."""
    return tuple(re.findall(r"\s*\S+", text))


def message_text(content: object) -> str:
    """The text of a message's content: the string itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        ]
        return " ".join(parts)
    return ""


def last_user_text(messages: Sequence[dict[str, Any]]) -> str:
    """The text of the last user message, or "" when there is none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message.get("content"))
    return ""


def prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """A stable stand-in for the prompt's token count: words plus a per-message overhead."""
    return sum(3 + len(message_text(m.get("content")).split()) for m in messages)


def answer_text(prompt: str, index: int) -> str:
    """The deterministic answer for choice ``index`` of ``prompt`` (40-60 tokens)."""
    snippet = " ".join(prompt.split())[:_SNIPPET_CHARS].strip() or "(empty prompt)"
    text = f"Mock answer {index} to: {snippet}."
    digest = zlib.crc32(f"{index}\x00{prompt}".encode())
    start = digest % len(_POOL)
    stride = 1 + (digest >> 8) % (len(_POOL) - 1)
    count = len(tokenize(text))
    # The prefix is at most 24 tokens and no sentence is over 13, so this ends by 52 (<= 60).
    for k in range(len(_POOL)):
        if count >= _MIN_TOKENS:
            break
        sentence = _POOL[(start + k * stride) % len(_POOL)]
        text += " " + sentence
        count += len(tokenize(sentence))
    return text


@dataclass(frozen=True, slots=True)
class ChoicePlan:
    """One choice: what it opens with, its tokens in order, and why it stops."""

    index: int
    tool_name: str | None
    tokens: tuple[tuple[Field, str], ...]
    finish_reason: str

    @property
    def tool_call_id(self) -> str:
        """The id of this choice's tool call."""
        return f"call_mock_{self.index + 1}"

    def opening_delta(self) -> dict[str, Any]:
        """The first delta of the choice, which carries the role."""
        if self.tool_name is not None:
            call = {
                "index": 0,
                "id": self.tool_call_id,
                "type": "function",
                "function": {"name": self.tool_name, "arguments": ""},
            }
            return {"role": "assistant", "content": None, "tool_calls": [call]}
        if any(field == "refusal" for field, _ in self.tokens):
            return {"role": "assistant", "content": None, "refusal": ""}
        return {"role": "assistant", "content": ""}

    def message(self) -> dict[str, Any]:
        """The whole message, as a non-streaming ``chat.completion`` carries it."""
        joined: dict[Field, str] = {}
        for field, text in self.tokens:
            joined[field] = joined.get(field, "") + text
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None if self.tool_name is not None else joined.get("content", ""),
            "refusal": joined.get("refusal"),
        }
        if "refusal" in joined:
            message["content"] = None
        if "reasoning_content" in joined:
            message["reasoning_content"] = joined["reasoning_content"]
        if self.tool_name is not None:
            function = {"name": self.tool_name, "arguments": joined.get("arguments", "")}
            message["tool_calls"] = [
                {"id": self.tool_call_id, "type": "function", "function": function}
            ]
        return message


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat completions body the mock acts on."""

    model: str
    prompt: str
    prompt_tokens: int
    n: int
    max_tokens: int | None
    stream: bool
    include_usage: bool
    tool_name: str | None


def positive_int(body: dict[str, Any], name: str) -> int | None:
    """``body[name]`` if it is a positive integer or absent (None); ValueError otherwise."""
    value = body.get(name)
    if value is None:
        return None
    # bool is an int subclass, and true is not a count.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not valid for '{name}': expected an integer >= 1.")
    return value


def _first_tool_name(tools: object) -> str | None:
    """The function name of the request's first tool, if it has one."""
    if isinstance(tools, list) and tools and isinstance(tools[0], dict):
        function = tools[0].get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return str(function["name"])
    return None


def parse_request(body: object) -> ChatRequest:
    """Validate a chat completions body; ValueError carries the message for a 400."""
    if not isinstance(body, dict):
        raise ValueError("The request body must be a JSON object.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty array.")
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise ValueError("Every item of 'messages' must be an object with a string 'role'.")
    model = body.get("model", DEFAULT_MODEL)
    if not isinstance(model, str):
        raise ValueError("'model' must be a string.")
    n = positive_int(body, "n") or 1
    max_tokens = positive_int(body, "max_completion_tokens") or positive_int(body, "max_tokens")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return ChatRequest(
        model=model,
        prompt=last_user_text(messages),
        prompt_tokens=prompt_tokens(messages),
        n=min(n, MAX_CHOICES),
        max_tokens=max_tokens,
        stream=body.get("stream") is True,
        include_usage=include_usage,
        tool_name=_first_tool_name(body.get("tools")),
    )


def token_delta(field: Field, text: str) -> dict[str, Any]:
    """The delta that carries one token."""
    if field == "arguments":
        return {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}
    return {field: text}


@functools.lru_cache(maxsize=256)  # asked once per token while a stream is paced
def sized_scenario(model: str) -> tuple[SizedKind, int] | None:
    """The kind and token count a long mock model name asks for, else None.

    ``(kind, token count)`` for ``mock-long[-N]``, ``mock-stamp[-N]`` and ``mock-flood[-N]``, else
    None.
    """
    match = _SIZED.fullmatch(model)
    if match is None:
        return None
    kinds: dict[str, SizedKind] = {"long": "long", "stamp": "stamp", "flood": "flood"}
    kind = kinds[match.group(1)]
    count = int(match.group(2)) if match.group(2) else LONG_DEFAULT_TOKENS
    return kind, max(1, min(count, LONG_MAX_TOKENS))


def is_stamped(model: str) -> bool:
    """True for the ``mock-stamp`` models, whose tokens carry their send time."""
    sized = sized_scenario(model)
    return sized is not None and sized[0] == "stamp"


def is_unpaced(model: str) -> bool:
    """True for the ``mock-flood`` models, which ignore the mock's pacing."""
    sized = sized_scenario(model)
    return sized is not None and sized[0] == "flood"


def stamp_token(now: float) -> str:
    """A stamp token: a wall-clock time in seconds, to the microsecond, after a space."""
    return f" {now:.6f}"


def long_tokens(count: int) -> list[str]:
    """``count`` deterministic word tokens (the answer pool, over and over)."""
    words = tokenize(" " + " ".join(_POOL))
    tokens = [words[i % len(words)] for i in range(count)]
    if tokens:
        tokens[0] = tokens[0].lstrip()
    return tokens


def flood_tokens(count: int) -> list[str]:
    """``count`` chunks of FLOOD_CHUNK_CHARS characters (the answer pool, cut to size)."""
    pool = " " + " ".join(_POOL)
    chunk = (pool * (FLOOD_CHUNK_CHARS // len(pool) + 1))[:FLOOD_CHUNK_CHARS]
    return [chunk] * count


def stamp_plan(plan: ChoicePlan, now: float) -> ChoicePlan:
    """The plan with every token's text replaced by the stamp of ``now``."""
    stamped = tuple((field, stamp_token(now)) for field, _ in plan.tokens)
    return ChoicePlan(plan.index, plan.tool_name, stamped, plan.finish_reason)


def ending_for(model: str) -> Ending:
    """How a scenario's stream ends."""
    if model == "mock-error":
        return "error"
    if model == "mock-truncate":
        return "truncate"
    return "normal"


def plan_choice(
    model: str, prompt: str, index: int, tool_name: str | None, max_tokens: int | None
) -> ChoicePlan:
    """Plan one choice of ``model`` for ``prompt``, cut at ``max_tokens``."""
    tokens: list[tuple[Field, str]]
    name: str | None = None
    finish = "stop"
    if model == "mock-tools":
        name = tool_name or "get_weather"
        tokens = [("arguments", fragment) for fragment in ARGUMENT_FRAGMENTS]
        finish = "tool_calls"
    elif model == "mock-refusal":
        tokens = [("refusal", t) for t in tokenize(REFUSAL)]
    elif (sized := sized_scenario(model)) is not None:
        # Stamp tokens get their time when sent; the plan holds a zero stamp of the same shape.
        kind, count = sized
        if kind == "stamp":
            texts = [stamp_token(0.0)] * count
        else:
            texts = flood_tokens(count) if kind == "flood" else long_tokens(count)
        tokens = [("content", t) for t in texts]
    else:
        tokens = [("content", t) for t in tokenize(answer_text(prompt, index))]
        if model == "mock-reasoning":
            tokens = [("reasoning_content", t) for t in tokenize(THOUGHT)] + tokens
    if model == "mock-incomplete":
        max_tokens = min(max_tokens or BROKEN_AFTER, BROKEN_AFTER)
    if max_tokens is not None and len(tokens) > max_tokens:
        tokens = tokens[:max_tokens]
        finish = "length"
    return ChoicePlan(index=index, tool_name=name, tokens=tuple(tokens), finish_reason=finish)
