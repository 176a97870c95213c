"""
The recorder's fast paths (issue 19) give exactly what the plain ways give:
the memo of secret key names, the NaN search over a request body's bytes;
and the SQLite writer checkpoints its WAL less often.
"""

from __future__ import annotations

import json
from pathlib import Path

from lunaroute import secrets
from lunaroute.secrets import is_secret_name
from lunaroute.sessions import events
from lunaroute.sessions.events import scrub_secrets
from lunaroute.sessions.sqlite import WAL_AUTOCHECKPOINT_PAGES, SQLiteWriter, connect


def test_nan_search_agrees_with_the_plain_search() -> None:
    """
    C{_has_nan} (capital N to capital N) answers as C{b"NaN" in raw} does,
    also past its 64 steps and for the near misses.
    """
    many = b"N" * 100
    bodies = [
        b'{"a":1}',
        b'{"a":NaN}',
        b'{"a":"NaN"}',
        b"NaN",
        b"xNa",
        b"NNaN",
        b"N a N",
        b'{"text":"' + b"No. " * 80 + b'","x":NaN}',
        b'{"text":"' + b"No. " * 80 + b'","x":1}',
        b'{"t":"' + many + b'"}',
        many + b"aN",
        b'{"NaNa":"\xff\xfeN"}',
    ]
    for raw in bodies:
        assert events._has_nan(raw) is (b"NaN" in raw), raw


def test_secret_keys_are_masked_whatever_the_memo_holds() -> None:
    """
    The memo of key names is bounded (a client inventing keys only fills
    it) and never changes the answer: credentials at any depth, escaped
    key names and camel case are masked before, while and after it fills.
    """
    escaped = json.loads('{"outer": [{"api\\u005fkey": "sk-ant-0123456789abcdef"}]}')
    body = {
        "deep": {"list": [{"x": {"apiKey": "sk-proj-0123456789abcdefgh"}}]},
        "X-API-KEY": "short",
        "prompt_cache_key": "stays",
        "max_tokens": 5,
    }
    for _round in range(3):
        assert scrub_secrets(escaped) == {"outer": [{"api_key": "sk-a…cdef"}]}
        assert scrub_secrets(body) == {
            "deep": {"list": [{"x": {"apiKey": "sk-p…efgh"}}]},
            "X-API-KEY": "***",
            "prompt_cache_key": "stays",
            "max_tokens": 5,
        }
        invented = {f"field_{i}_{_round}": i for i in range(secrets.SECRET_NAME_MEMO_MAX + 10)}
        assert scrub_secrets(invented) is invented
        assert len(secrets.SECRET_NAME_MEMO) <= secrets.SECRET_NAME_MEMO_MAX
    for key, secret in secrets.SECRET_NAME_MEMO.items():
        assert secret is is_secret_name(key)
    long_key = "x" * 10_000 + "_api_key"
    assert scrub_secrets({long_key: "sk-ant-0123456789abcdef"}) == {long_key: "sk-a…cdef"}
    assert long_key not in secrets.SECRET_NAME_MEMO


def test_the_writer_checkpoints_its_wal_every_10000_pages(tmp_path: Path) -> None:
    """
    The writer's connection lets the WAL grow to WAL_AUTOCHECKPOINT_PAGES
    (docs/performance.md: fewer checkpoints, less CPU per commit); readers
    keep SQLite's default, and a closed writer leaves no WAL behind.
    """
    db = str(tmp_path / "sessions.db")
    writer = SQLiteWriter(db)
    conn = writer.connection()
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_AUTOCHECKPOINT_PAGES == 10_000
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    reader = connect(db)
    try:
        assert reader.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
    finally:
        reader.close()
    writer.close()
    assert not (tmp_path / "sessions.db-wal").exists()
