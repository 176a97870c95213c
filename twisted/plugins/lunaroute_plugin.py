"""
The twistd plugin: makes C{twistd lunaroute} available.

Kept tiny and lazy: the real module is imported only when the sub-command is
used, so C{twistd --help} stays fast and unaffected by LunaRoute's imports.
"""

from twisted.application.service import ServiceMaker

lunaroute = ServiceMaker(
    "LunaRoute",
    "lunaroute.tap",
    "LLM API gateway for Claude Code, Codex CLI and the Anthropic/OpenAI SDKs.",
    "lunaroute",
)
