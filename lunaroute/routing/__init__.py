"""
Routing: which provider(s) a request goes to, and when to stop sending to one.

Sans-I/O cores, each driven by an injected clock (L{IReactorTime}) so the
tests use L{twisted.internet.task.Clock}:

  - L{lunaroute.routing.breaker}: one circuit breaker per provider.
  - L{lunaroute.routing.health}: success rate and latency over a sliding window.
  - L{lunaroute.routing.strategies}: round robin, smooth weighted round robin,
    rate-limit alternatives.
  - L{lunaroute.routing.markers}: C{[LUNAROUTE:<name>]} markers in prompts.
  - L{lunaroute.routing.plan}: rules -> an ordered plan of attempts.
  - L{lunaroute.routing.retry}: which outcome is retried, moved on from, or final.
  - L{lunaroute.routing.notice}: the switch notice put into a fallback's request.

The request lifecycle (L{lunaroute.proxy}) calls them; nothing here does I/O.
"""
