"""
LunaRoute: an LLM API gateway for AI coding assistants.

It passes Anthropic and OpenAI API traffic through with full fidelity,
streams unbuffered, and taps the stream for session recording, statistics
and metrics.
"""

__version__ = "0.1.0"
