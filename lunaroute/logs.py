"""
LunaRoute's own log level.

twistd starts its log observer after the service is built, so the gateway
cannot put a level filter in front of it.  Instead every LunaRoute module logs
through one filtering observer whose level follows C{logging.level}; Twisted's
own events are untouched.
"""

from __future__ import annotations

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}

_predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)

log_observer = FilteringLogObserver(globalLogPublisher, [_predicate])


_debug = False


def set_log_level(level: str) -> None:
    """Set the lowest level LunaRoute logs at: debug, info, warn or error."""
    global _debug
    # The empty namespace sets the default level (every LunaRoute logger).
    _predicate.setLogLevelForNamespace("", _LEVELS[level])
    _debug = level == "debug"


def debug_enabled() -> bool:
    """Whether debug events are logged: lets hot paths skip building them."""
    return _debug
