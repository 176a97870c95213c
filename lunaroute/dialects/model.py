"""Provider-neutral description of one finished (or abandoned) response.

Recording, statistics and the session store all want the same handful of
facts about a response whatever API produced it; the dialect accumulators
each fill in a :class:`ResponseSummary` so nothing downstream has to know
the three wire formats.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ResponseSummary", "ToolCall", "Usage", "estimate_tokens", "parse_tool_input"]


@dataclass
class ToolCall:
    """A tool invocation the model asked for.

    ``raw_input`` is the argument text exactly as the provider sent it;
    ``input`` is that text parsed as JSON, the raw string itself when it is
    not valid JSON (e.g. a truncated stream), or ``{}`` when it is empty.
    """

    id: str | None
    name: str | None
    input: Any
    raw_input: str


@dataclass
class Usage:
    """Token counts, normalised so the providers can be compared.

    The two provider families count differently, and the fields keep each
    provider's own numbers rather than rebasing them:

    * Anthropic: ``input_tokens`` excludes cached prompt tokens, which are
      reported separately as ``cache_read_tokens`` (read from the cache) and
      ``cache_creation_tokens`` (written to it, all lifetimes together).  Of
      the writes, ``cache_creation_1h_tokens`` went to the 1-hour cache
      (``usage.cache_creation.ephemeral_1h_input_tokens``, billed at 2x
      input) and :attr:`cache_creation_5m_tokens`, the rest, to the 5-minute
      cache (1.25x input); a response giving only the total wrote 5-minute
      entries.  ``output_tokens`` includes
      thinking, which the API does not break out, so ``thinking_tokens`` is an
      estimate from the thinking text and ``thinking_tokens_exact`` is False.
    * OpenAI (Chat and Responses): ``input_tokens`` is ``prompt_tokens`` /
      ``input_tokens`` which already INCLUDES the cached tokens given in
      ``cache_read_tokens``; ``output_tokens`` includes reasoning, and
      ``thinking_tokens`` is the exact ``reasoning_tokens`` figure.  OpenAI
      has no cache-creation count, so ``cache_creation_tokens`` stays 0.

    ``total`` is simply ``input_tokens + output_tokens``: for Anthropic it
    therefore leaves out cache traffic, for OpenAI it matches ``total_tokens``.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    thinking_tokens_exact: bool = False
    cache_creation_1h_tokens: int = 0

    @property
    def total(self) -> int:
        """Input plus output tokens (see the class docstring for caveats)."""
        return self.input_tokens + self.output_tokens

    @property
    def cache_creation_5m_tokens(self) -> int:
        """5-minute cache writes: every write that is not a 1-hour one."""
        one_hour = max(0, min(self.cache_creation_1h_tokens, self.cache_creation_tokens))
        return max(0, self.cache_creation_tokens - one_hour)


@dataclass
class ResponseSummary:
    """What one provider response amounted to.

    ``message`` is the final response rebuilt in the provider's own
    non-streaming shape (an Anthropic Messages response, a
    ``chat.completion`` or a Responses ``response`` object).  ``error`` is the
    payload of an in-stream error event or the JSON body of an error
    response.  ``partial`` means the result may be incomplete: the stream
    ended early, something could not be parsed, or the body was too large or
    in an unsupported encoding.  ``streaming`` says whether the body was an
    event stream.
    """

    dialect: str
    model: str | None = None
    response_id: str | None = None
    text: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    message: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    partial: bool = False
    event_count: int = 0
    streaming: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return a plain, ``json.dumps``-able dict of every field."""
        out = dataclasses.asdict(self)
        out["usage"]["total"] = self.usage.total
        out["usage"]["cache_creation_5m_tokens"] = self.usage.cache_creation_5m_tokens
        return out


def parse_tool_input(raw: str) -> Any:
    """Parse tool-call argument text the way :class:`ToolCall` documents."""
    if not raw or raw.isspace():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def estimate_tokens(text: str) -> int:
    """Rough token count for text a provider did not count for us.

    Four characters per token is the usual rule of thumb for English; it is
    only used where the API gives no figure (Anthropic thinking).
    """
    return math.ceil(len(text) / 4) if text else 0


# One encoder for every call: json.dumps with options builds a new one each
# time, which costs a third of encoding a tool call's arguments.
_compact_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def json_compact(value: Any) -> str:
    """Serialise ``value`` the way providers write argument strings."""
    return _compact_encode(value)
