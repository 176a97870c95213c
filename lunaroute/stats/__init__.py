"""
Statistics about what passed through the gateway: estimated cost per model
(L{PricingTable}) and running per-session totals (L{SessionStatsCollector}),
shown in the shutdown summary and, later, by the session API and UI.
"""

from lunaroute.stats.pricing import ModelPrice, PricingTable
from lunaroute.stats.session_stats import TOKEN_KINDS, SessionStatsCollector

__all__ = ["ModelPrice", "PricingTable", "SessionStatsCollector", "TOKEN_KINDS"]
