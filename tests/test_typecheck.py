"""
mypy runs with the mypy-zope plugin (C{[tool.mypy]} in pyproject.toml), so an
C{@implementer} class that drifts from its interface is a type error, not a
surprise at run time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

DRIFTED = '''
from typing import Any

from zope.interface import implementer

from lunaroute.interfaces import IProvider, ISessionWriter


@implementer(ISessionWriter)
class TextWriter:
    name = "text"

    def write_batch(self, events: str) -> None:
        pass

    def close(self) -> None:
        pass


@implementer(IProvider)
class HalfProvider:
    name = "half"


def timeout(provider: IProvider) -> Any:
    return provider.settings.http_client.timeout_secs
'''


def test_mypy_zope_checks_implementers_against_the_interfaces(tmp_path: Path) -> None:
    """A wrong method signature and missing members are reported; reading an interface attribute is not."""
    module = tmp_path / "drifted.py"
    module.write_text(DRIFTED)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), str(module)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 1, result.stdout + result.stderr
    assert any('incompatible with "write_batch" of supertype "ISessionWriter"' in e for e in errors), errors
    assert any("'HalfProvider' is missing following 'IProvider' interface members" in e for e in errors), errors
    missing = next(e for e in errors if "HalfProvider" in e)
    for member in ("close", "has_server_key", "note_in_flight", "pool", "provider_type", "request", "settings"):
        assert member in missing
    assert len(errors) == 2, errors
