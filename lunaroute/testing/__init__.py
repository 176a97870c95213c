"""
Test doubles shipped with LunaRoute: a fake upstream provider that speaks
the real Anthropic and OpenAI wire formats (L{fake_provider}), used by the
test suite, the benchmark and hand-driven runs of the real coding CLIs.
"""
