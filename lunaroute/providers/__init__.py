"""
Upstream providers: L{lunaroute.interfaces.IProvider} implementations that
own a pool of persistent HTTP connections each.
"""

__all__ = ["HTTPProvider", "providers_from_settings"]

from lunaroute.providers.http import HTTPProvider, providers_from_settings
