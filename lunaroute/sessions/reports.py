"""
Usage reports and search on the command line: C{lunaroute-server report
daily|weekly|monthly|session|blocks} and C{lunaroute-server search}.

What ccusage does from Claude Code's own logs, from the usage the provider
really returned for each request (one C{session_stats} row per request), so a
report cannot undercount and its cost is the sum of the per-request costs.

The module is in two layers.  Pure functions over L{UsageRow}s (grouping,
5-hour blocks, burn rate, table layout) hold every rule and are tested
without a database.  Thin query functions read the SQLite store through a
read-only connection (C{file:...?mode=ro}) with parameterised SQL, and adapt
to the schema they find: the C{sessions.project} and C{sessions.client}
columns are used when present (schema v4), and a C{--project} filter on an
older database is accepted with a note.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sqlite3
import sys
import textwrap
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lunaroute.errors import ConfigError

REPORT_KINDS = ("daily", "weekly", "monthly", "session", "blocks")
CLIENTS = ("Claude Code", "Codex", "other")
BLOCK_HOURS = 5
DEFAULT_WIDTH = 80
# Costs per request and the search index came with session schema v2.
MIN_SCHEMA = 2

# Exit statuses: 1 for a database or configuration problem, 2 for a bad
# argument (argparse's convention), a malformed search query included.
EXIT_ERROR = 1
EXIT_USAGE = 2


class ReportError(Exception):
    """A problem to show the user as one line, with the exit status to use."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------
# Pure helpers: parsing options


def parse_day(text: str) -> date:
    """A C{--since}/C{--until} value: C{YYYY-MM-DD} or C{YYYYMMDD}."""
    value = text.strip()
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(value, pattern).date()
        except ValueError:
            continue
    raise ReportError(f"bad date {text!r}: use YYYY-MM-DD or YYYYMMDD", EXIT_USAGE)


def local_timezone() -> tzinfo:
    """The machine's time zone: C{$TZ} or C{/etc/localtime}, else the current UTC offset."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime")
    except (OSError, ValueError):
        pass
    return datetime.now().astimezone().tzinfo or UTC


def parse_timezone(name: str | None) -> tzinfo:
    """An IANA time zone name (C{Europe/Paris}, C{UTC}); C{None} is the local zone."""
    if not name:
        return local_timezone()
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"unknown time zone {name!r} (use an IANA name such as Europe/Paris or UTC)", EXIT_USAGE) from None


def timezone_name(zone: tzinfo) -> str:
    key = getattr(zone, "key", None)
    if isinstance(key, str) and key != "localtime":
        return key
    return datetime.now(zone).strftime("%Z") or str(zone)


def day_bounds(since: date | None, until: date | None, zone: tzinfo) -> tuple[str | None, str | None]:
    """
    The UTC timestamps (in the store's ISO format) bounding the local days
    C{since} to C{until}, both included: from C{since}'s local midnight to
    the local midnight after C{until} (excluded).
    """
    if since is not None and until is not None and since > until:
        raise ReportError(f"--since {since.isoformat()} is after --until {until.isoformat()}", EXIT_USAGE)
    low = iso_utc(datetime.combine(since, datetime.min.time(), zone)) if since else None
    high = iso_utc(datetime.combine(until + timedelta(days=1), datetime.min.time(), zone)) if until else None
    return low, high


def iso_utc(moment: datetime) -> str:
    """A datetime as the store writes timestamps: C{2025-06-15T14:03:07.412Z}."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """A stored timestamp as an aware UTC datetime."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def client_of(user_agent: str | None) -> str:
    """
    Which assistant sent a request, from its user agent: C{Claude Code}
    (C{claude-cli/2.1.12 (external, sdk-cli)}), C{Codex} (C{codex_cli_rs/...},
    C{codex_exec/...}) or C{other} (the SDKs, curl, anything else).
    """
    agent = (user_agent or "").lower()
    if agent.startswith("claude-cli") or "claude-code" in agent or "claude_code" in agent:
        return "Claude Code"
    if agent.startswith("codex") or "codex_cli" in agent or "codex-cli" in agent:
        return "Codex"
    return "other"


def _client_key(name: str) -> str:
    return re.sub(r"[\s_-]+", "", name.lower())


def client_choice(text: str) -> str:
    """A C{--client} value (any case, spaces or dashes) as one of L{CLIENTS}."""
    wanted = _client_key(text)
    for name in CLIENTS:
        if _client_key(name) == wanted:
            return name
    raise ReportError(f"unknown client {text!r}: use claude-code, codex or other", EXIT_USAGE)


def short_model(model: str | None) -> str:
    """A model id shortened for a table: C{claude-sonnet-4-5-20250929} → C{sonnet-4-5}."""
    if not model:
        return "unknown"
    name = model
    if name.startswith("claude-"):
        name = name[len("claude-"):]
    return re.sub(r"-(\d{8}|\d{4}-\d{2}-\d{2})$", "", name)


# --------------------------------------------------------------------------
# Pure helpers: grouping


@dataclass(slots=True)
class UsageRow:
    """
    The usage of one request, or of several requests of the same kind
    (model, client, session) received within the same quarter of an hour,
    summed by the database (L{query_usage_rows}).  A quarter of an hour
    never straddles a day in any time zone (their offsets are multiples of
    15 minutes) nor a 5-hour block's end (always on the hour), so the
    reports group such rows as they would group the requests.

    C{input_tokens} is the input that was not read from the cache: OpenAI
    counts cached tokens inside its input figure, Anthropic apart from it,
    so for OpenAI dialects the cache reads are taken out and the columns
    mean the same for every provider.  C{cost_usd} is the sum of the known
    costs of the C{priced} requests among C{requests}.
    """

    session_id: str
    first: datetime
    model: str | None
    client: str
    input_tokens: int
    output_tokens: int
    cache_creation_tokens: int
    cache_read_tokens: int
    cost_usd: float | None
    requests: int = 1
    priced: int | None = None
    last: datetime | None = None

    def __post_init__(self) -> None:
        if self.priced is None:
            self.priced = self.requests if self.cost_usd is not None else 0
        if self.last is None:
            self.last = self.first

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens


def usage_row(record: dict[str, Any]) -> UsageRow | None:
    """
    A L{UsageRow} from a row of L{query_usage_rows}' query (C{first_at},
    C{last_at}, C{requests}, C{priced}, the summed token columns with the
    OpenAI input already net of cache reads, C{cost}, and C{user_agent} or
    a stored C{client}); C{None} for a row without a timestamp.
    """
    first = record.get("first_at")
    if not first:
        return None
    last = record.get("last_at") or first
    stored_client = record.get("client")
    cost = record.get("cost")
    return UsageRow(
        session_id=str(record.get("session_id") or ""),
        first=parse_iso(str(first)),
        last=parse_iso(str(last)),
        model=record.get("model") or None,
        client=client_category(stored_client) if stored_client else client_of(record.get("user_agent")),
        input_tokens=int(record.get("input_tokens") or 0),
        output_tokens=int(record.get("output_tokens") or 0),
        cache_creation_tokens=int(record.get("cache_creation_tokens") or 0),
        cache_read_tokens=int(record.get("cache_read_tokens") or 0),
        cost_usd=float(cost) if cost is not None else None,
        requests=int(record.get("requests") or 1),
        priced=int(record.get("priced") or 0),
    )


def client_category(name: str) -> str:
    """A stored client name (schema v4's C{sessions.client}) as one of L{CLIENTS}."""
    key = _client_key(name)
    for known in CLIENTS[:2]:
        if _client_key(known) == key:
            return known
    return client_of(name)


@dataclass
class Totals:
    """Summed usage of a group of requests."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_tokens: int = 0
    cache_read_tokens: int = 0
    priced_costs: list[float] = field(default_factory=list)
    unpriced_requests: int = 0
    models: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None

    def add(self, row: UsageRow) -> None:
        self.requests += row.requests
        self.input_tokens += row.input_tokens
        self.output_tokens += row.output_tokens
        self.cache_creation_tokens += row.cache_creation_tokens
        self.cache_read_tokens += row.cache_read_tokens
        priced = row.priced or 0
        if priced and row.cost_usd is not None:
            self.priced_costs.append(row.cost_usd)
        self.unpriced_requests += row.requests - priced
        self.models.add(row.model or "unknown")
        last = row.last or row.first
        if self.first is None or row.first < self.first:
            self.first = row.first
        if self.last is None or last > self.last:
            self.last = last

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_creation_tokens + self.cache_read_tokens

    @property
    def cost_usd(self) -> float:
        """The sum of the known per-request costs (exactly rounded, order-independent)."""
        return math.fsum(self.priced_costs)

    @property
    def cost_complete(self) -> bool:
        return self.unpriced_requests == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "models": sorted(self.models),
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_tokens": self.cache_creation_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": self.cost_usd if self.priced_costs else None,
            "cost_complete": self.cost_complete,
            "unpriced_requests": self.unpriced_requests,
        }


@dataclass
class Group:
    """One line of a report: a key (day, week, month, session or block) and its totals."""

    key: str
    totals: Totals = field(default_factory=Totals)
    by_model: dict[str, Totals] = field(default_factory=dict)

    def add(self, row: UsageRow) -> None:
        self.totals.add(row)
        self.by_model.setdefault(row.model or "unknown", Totals()).add(row)


def period_key(kind: str, moment: datetime, zone: tzinfo) -> str:
    """
    The day (C{2025-06-15}), week (the date of its Monday) or month
    (C{2025-06}) a moment falls in, in the time zone C{zone}.
    """
    local = moment.astimezone(zone).date()
    if kind == "daily":
        return local.isoformat()
    if kind == "weekly":
        return (local - timedelta(days=local.weekday())).isoformat()
    if kind == "monthly":
        return local.strftime("%Y-%m")
    raise ValueError(kind)


def group_rows(rows: Iterable[UsageRow], key: Callable[[UsageRow], str]) -> list[Group]:
    """The rows grouped by C{key}, groups in key order."""
    groups: dict[str, Group] = {}
    for row in rows:
        name = key(row)
        group = groups.get(name)
        if group is None:
            group = groups[name] = Group(name)
        group.add(row)
    return [groups[name] for name in sorted(groups)]


def group_sessions(rows: Iterable[UsageRow]) -> list[Group]:
    """One group per session, the most recently active last."""
    groups = group_rows(rows, lambda row: row.session_id)
    return sorted(groups, key=lambda g: (g.totals.last or datetime.min.replace(tzinfo=UTC), g.key))


@dataclass
class Block:
    """
    One 5-hour billing window: it starts at the hour (UTC) of its first
    request and ends five hours later.
    """

    start: datetime
    group: Group

    @property
    def end(self) -> datetime:
        return self.start + timedelta(hours=BLOCK_HOURS)

    def active(self, now: datetime) -> bool:
        return self.start <= now < self.end

    def burn_rate(self) -> tuple[float, float] | None:
        """
        Tokens per minute and dollars per hour between the block's first and
        last request; C{None} while they are less than a minute apart.
        """
        first, last = self.group.totals.first, self.group.totals.last
        if first is None or last is None:
            return None
        minutes = (last - first).total_seconds() / 60.0
        if minutes < 1.0:
            return None
        totals = self.group.totals
        return totals.total_tokens / minutes, totals.cost_usd / (minutes / 60.0)

    def projection(self, now: datetime) -> dict[str, Any] | None:
        """
        For the active block: the totals at its end if usage keeps the
        current burn rate, and the minutes left.
        """
        if not self.active(now):
            return None
        remaining = (self.end - now).total_seconds() / 60.0
        rate = self.burn_rate()
        totals = self.group.totals
        tokens_per_minute, dollars_per_hour = rate if rate is not None else (0.0, 0.0)
        return {
            "remaining_minutes": round(remaining, 1),
            "total_tokens": int(round(totals.total_tokens + tokens_per_minute * remaining)),
            "cost_usd": totals.cost_usd + dollars_per_hour * remaining / 60.0,
        }


def split_blocks(rows: Iterable[UsageRow]) -> list[Block]:
    """
    The requests cut into 5-hour blocks: a block starts at the first
    request's hour, floored, and the first request at or after its end
    starts the next one (so idle stretches make no empty blocks).
    """
    blocks: list[Block] = []
    for row in sorted(rows, key=lambda r: (r.first, r.model or "")):
        if not blocks or row.first >= blocks[-1].end:
            start = row.first.replace(minute=0, second=0, microsecond=0)
            blocks.append(Block(start, Group(iso_utc(start))))
        blocks[-1].group.add(row)
    return blocks


def filter_rows(rows: Iterable[UsageRow], *, model: str | None = None, client: str | None = None) -> list[UsageRow]:
    """
    The rows matching every filter given: C{model} as a case-insensitive
    part of the model id (C{sonnet}), C{client} one of L{CLIENTS}.  (The
    queries filter models, and projects, in SQL already.)
    """
    wanted_model = model.lower() if model else None
    return [
        row
        for row in rows
        if (wanted_model is None or wanted_model in (row.model or "").lower())
        and (client is None or row.client == client)
    ]


# --------------------------------------------------------------------------
# Pure helpers: the report as data


@dataclass
class Report:
    """A computed report, ready to print as a table or as JSON."""

    kind: str
    zone: tzinfo
    groups: list[Group]
    blocks: list[Block] = field(default_factory=list)
    since: date | None = None
    until: date | None = None
    filters: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    now: datetime | None = None

    @property
    def totals(self) -> Totals:
        total = Totals()
        for group in self.groups:
            part = group.totals
            total.requests += part.requests
            total.input_tokens += part.input_tokens
            total.output_tokens += part.output_tokens
            total.cache_creation_tokens += part.cache_creation_tokens
            total.cache_read_tokens += part.cache_read_tokens
            total.priced_costs.extend(part.priced_costs)
            total.unpriced_requests += part.unpriced_requests
            total.models |= part.models
            for moment in (part.first, part.last):
                if moment is not None:
                    total.first = moment if total.first is None else min(total.first, moment)
                    total.last = moment if total.last is None else max(total.last, moment)
        return total

    def key_name(self) -> str:
        return {
            "daily": "date",
            "weekly": "week",
            "monthly": "month",
            "session": "session_id",
            "blocks": "block_start",
        }[self.kind]

    def to_json(self, breakdown: bool = False) -> dict[str, Any]:
        rows = []
        now = self.now or datetime.now(UTC)
        blocks = {block.group.key: block for block in self.blocks}
        for group in self.groups:
            item: dict[str, Any] = {self.key_name(): group.key}
            if self.kind == "session":
                item["first_request"] = iso_utc(group.totals.first) if group.totals.first else None
                item["last_request"] = iso_utc(group.totals.last) if group.totals.last else None
            item.update(group.totals.to_json())
            block = blocks.get(group.key)
            if block is not None:
                item["block_start"] = iso_utc(block.start)
                item["block_end"] = iso_utc(block.end)
                item["first_request"] = iso_utc(group.totals.first) if group.totals.first else None
                item["last_request"] = iso_utc(group.totals.last) if group.totals.last else None
                item["active"] = block.active(now)
                rate = block.burn_rate()
                item["burn_rate"] = (
                    {"tokens_per_minute": rate[0], "cost_usd_per_hour": rate[1]} if rate is not None else None
                )
                item["projection"] = block.projection(now)
            if breakdown:
                item["breakdown"] = [
                    {"model": name, **totals.to_json()} for name, totals in sorted(group.by_model.items())
                ]
            rows.append(item)
        return {
            "report": self.kind,
            "timezone": timezone_name(self.zone),
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "filters": self.filters,
            "notes": self.notes,
            "rows": rows,
            "totals": self.totals.to_json(),
        }


def build_report(
    kind: str,
    rows: Iterable[UsageRow],
    zone: tzinfo,
    *,
    since: date | None = None,
    until: date | None = None,
    filters: dict[str, str | None] | None = None,
    notes: list[str] | None = None,
    now: datetime | None = None,
) -> Report:
    """Group already-filtered rows into the report C{kind} (one of L{REPORT_KINDS})."""
    rows = list(rows)
    blocks: list[Block] = []
    if kind in ("daily", "weekly", "monthly"):
        groups = group_rows(rows, lambda row: period_key(kind, row.first, zone))
    elif kind == "session":
        groups = group_sessions(rows)
    elif kind == "blocks":
        blocks = split_blocks(rows)
        groups = [block.group for block in blocks]
    else:
        raise ReportError(f"unknown report {kind!r}: use one of {', '.join(REPORT_KINDS)}", EXIT_USAGE)
    return Report(kind, zone, groups, blocks, since, until, dict(filters or {}), list(notes or []), now)


# --------------------------------------------------------------------------
# Pure helpers: text tables


def format_count(value: int, compact: bool = False) -> str:
    """C{1234567} as C{1,234,567}, or C{1.2M} when C{compact}."""
    if not compact or abs(value) < 10_000:
        return f"{value:,}"
    for limit, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= limit:
            scaled = value / limit
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 100 else f"{scaled:.0f}{suffix}"
    return str(value)


def format_cost(totals: Totals, compact: bool = False) -> str:
    """
    C{$1.23} (C{$0.042} under a dollar); C{$1.23*} when some requests had
    no known price; C{-} when none had.  C{compact} shortens $10,000 and more (C{$12.3K}).
    """
    if not totals.priced_costs:
        return "-"
    cost = totals.cost_usd
    if compact and cost >= 10_000:
        text = "$" + format_count(int(round(cost)), compact=True)
    elif 0 < cost < 1:
        text = f"${cost:.3f}"  # a tenth of a cent still shows
    else:
        text = f"${cost:,.2f}"
    return text if totals.cost_complete else text + "*"


UNPRICED_NOTE = "* some requests have no known price: the cost shown leaves them out"


@dataclass
class Table:
    """
    Rows of cells for L{render_table}; a cell may hold several lines.
    C{flexible} columns are cut (with C{…}) when the table is too wide;
    C{numeric} columns are right-aligned.
    """

    headers: list[str]
    rows: list[list[list[str]]] = field(default_factory=list)
    numeric: set[int] = field(default_factory=set)
    flexible: dict[int, int] = field(default_factory=dict)
    separator_before: set[int] = field(default_factory=set)
    # A line across the whole table before a row (a session's full id).
    banners: dict[int, str] = field(default_factory=dict)

    def add(self, *cells: str | list[str]) -> None:
        self.rows.append([cell if isinstance(cell, list) else [cell] for cell in cells])


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return text[: width - 1] + "…"


def render_table(table: Table, width: int = DEFAULT_WIDTH, fancy: bool = False) -> str:
    """
    The table as text at most C{width} columns wide (flexible columns are
    cut to fit).  C{fancy} draws box lines and a bold header for a terminal;
    otherwise columns are separated by two spaces and the header underlined
    with dashes, plain ASCII apart from the cut mark.
    """
    count = len(table.headers)
    header_lines = [h.split("\n") for h in table.headers]
    widths = [max(len(line) for line in lines) for lines in header_lines]
    for row in table.rows:
        for index, cell in enumerate(row):
            widths[index] = max([widths[index], *(len(line) for line in cell)])
    gap = 3 if fancy else 2
    edges = 4 if fancy else 0
    overflow = sum(widths) + gap * (count - 1) + edges - width
    for index, minimum in table.flexible.items():  # in the order of preference
        if overflow <= 0:
            break
        take = min(overflow, max(0, widths[index] - minimum))
        widths[index] -= take
        overflow -= take

    def line_of(cells: Sequence[str], bold: bool = False) -> str:
        parts = []
        for index, text in enumerate(cells):
            text = _cut(text, widths[index])
            parts.append(text.rjust(widths[index]) if index in table.numeric else text.ljust(widths[index]))
        if fancy:
            body = "│ " + " │ ".join(parts) + " │"
            return f"\x1b[1m{body}\x1b[0m" if bold else body
        return "  ".join(parts).rstrip()

    def rule(left: str, middle: str, right: str) -> str:
        return left + middle.join("─" * (w + 2) for w in widths) + right

    out: list[str] = []
    if fancy:
        out.append(rule("┌", "┬", "┐"))
    height = max(len(lines) for lines in header_lines)
    for number in range(height):
        cells = [lines[number] if number < len(lines) else "" for lines in header_lines]
        out.append(line_of(cells, bold=fancy))
    out.append(rule("├", "┼", "┤") if fancy else "  ".join("-" * w for w in widths))
    for row_number, row in enumerate(table.rows):
        if row_number in table.separator_before:
            out.append(rule("├", "┼", "┤") if fancy else "  ".join("-" * w for w in widths))
        banner = table.banners.get(row_number)
        if banner is not None:
            inner = sum(widths) + gap * (count - 1)
            text = _cut(banner, inner)
            out.append(f"│ {text.ljust(inner)} │" if fancy else text)
        for number in range(max(len(cell) for cell in row)):
            out.append(line_of([cell[number] if number < len(cell) else "" for cell in row]))
    if fancy:
        out.append(rule("└", "┴", "┘"))
    return "\n".join(out)


def _figures(totals: Totals, compact: bool) -> list[str]:
    return [
        format_count(totals.input_tokens, compact),
        format_count(totals.output_tokens, compact),
        format_count(totals.cache_creation_tokens, compact),
        format_count(totals.cache_read_tokens, compact),
        format_count(totals.total_tokens, compact),
        format_cost(totals, compact),
    ]


_FIGURE_HEADERS = ["Input", "Output", "Cache\nwrite", "Cache\nread", "Total\ntokens", "Cost\n(USD)"]


def report_table(report: Report, breakdown: bool = False, compact: bool = False) -> Table:
    """The report's rows, one per group (and per model with C{breakdown}), then the total."""
    key_header = {
        "daily": "Date",
        "weekly": "Week of",
        "monthly": "Month",
        "session": "Last\nactive",
        "blocks": "Block start\n(5 h)",
    }[report.kind]
    table = Table([key_header, "Models", *_FIGURE_HEADERS], numeric={2, 3, 4, 5, 6, 7})
    table.flexible = {1: 8}
    now = report.now or datetime.now(UTC)
    blocks = {block.group.key: block for block in report.blocks}
    for group in report.groups:
        key: list[str] = [group.key]
        if report.kind == "session":
            # The full id on a line of its own (it is what opens the
            # session), the row keyed by the last activity.
            table.banners[len(table.rows)] = f"Session {group.key}"
            last = group.totals.last
            local = last.astimezone(report.zone) if last else None
            key = [local.strftime("%Y-%m-%d"), local.strftime("%H:%M")] if local else ["?"]
        block = blocks.get(group.key)
        if block is not None:
            local = block.start.astimezone(report.zone)
            key = [local.strftime("%Y-%m-%d"), local.strftime("%H:%M")]
            if block.active(now):
                key.append("ACTIVE")
        models = sorted(short_model(name) for name in group.totals.models)
        table.add(key, models, *_figures(group.totals, compact))
        if breakdown and len(group.by_model) > 0:
            for name, totals in sorted(group.by_model.items(), key=lambda item: short_model(item[0])):
                table.add("", "- " + short_model(name), *_figures(totals, compact))
    if report.groups:
        table.separator_before = {len(table.rows)}
        table.add("Total", "", *_figures(report.totals, compact))
    return table


def fit_table(make: Callable[[bool], Table], width: int, fancy: bool) -> str:
    """Render with exact figures if they fit in C{width}, else with compact ones (C{1.2M})."""
    text = render_table(make(False), width, fancy)
    if max((_visible_len(line) for line in text.splitlines()), default=0) <= width:
        return text
    return render_table(make(True), width, fancy)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _visible_len(line: str) -> int:
    return len(_ANSI.sub("", line))


def block_lines(report: Report) -> list[str]:
    """The burn rate and projection of the active block, as lines under the table."""
    now = report.now or datetime.now(UTC)
    out = []
    for block in report.blocks:
        projection = block.projection(now)
        if projection is None:
            continue
        rate = block.burn_rate()
        ends = block.end.astimezone(report.zone).strftime("%H:%M")
        out.append(f"Active block: ends at {ends} ({projection['remaining_minutes']:.0f} min left)")
        if rate is None:
            out.append("Burn rate: not enough activity yet")
        else:
            out.append(f"Burn rate: {format_count(int(rate[0]))} tokens/min, ${rate[1]:,.2f}/h")
        out.append(
            f"Projected at block end: {format_count(projection['total_tokens'])} tokens, "
            f"${projection['cost_usd']:,.2f}"
        )
    return out


def render_report(report: Report, *, breakdown: bool = False, width: int = DEFAULT_WIDTH, fancy: bool = False) -> str:
    """The report as text: a title, the table, notes, at most C{width} columns."""
    title = f"LunaRoute usage, {report.kind} ({timezone_name(report.zone)})"
    lines = [_cut(title, width), ""]
    if not report.groups:
        lines.append("No recorded requests match.")
    else:
        lines.append(fit_table(lambda compact: report_table(report, breakdown, compact), width, fancy))
        if not report.totals.cost_complete:
            lines.append(UNPRICED_NOTE)
        if report.kind == "blocks":
            lines.extend(block_lines(report))
    for note in report.notes:
        lines.extend(textwrap.wrap("Note: " + note, width) or [""])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Search (pure part)

# snippet() marks: control characters no text holds, replaced at output time
# by brackets (plain text, JSON) or reverse video (a terminal).
HIT_START = "\x02"
HIT_END = "\x03"


@dataclass
class SearchHit:
    session_id: str
    request_id: str
    at: str | None
    model: str | None
    snippet: str
    score: float

    def to_json(self, base_url: str) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "request_id": self.request_id,
            "started_at": self.at,
            "model": self.model,
            "snippet": mark_snippet(self.snippet, "[", "]"),
            "rank": self.score,
            "open": open_command(base_url, self.session_id),
        }


def mark_snippet(snippet: str, start: str, end: str) -> str:
    return snippet.replace(HIT_START, start).replace(HIT_END, end)


def open_command(base_url: str, session_id: str, token_env: str | None = None) -> str:
    """The command that shows a session through the session API."""
    url = f"{base_url}/sessions/{urllib.parse.quote(session_id, safe='')}"
    header = f' -H "x-lunaroute-token: ${token_env}"' if token_env else ""
    return f"curl -s{header} '{url}'"


def render_hits(
    hits: Sequence[SearchHit],
    base_url: str,
    *,
    width: int = DEFAULT_WIDTH,
    fancy: bool = False,
    zone: tzinfo = UTC,
    token_env: str | None = None,
) -> str:
    """Matching turns as text, each with its snippet and the command to open its session."""
    if not hits:
        return "No recorded turn matches.\n"
    start, end = ("\x1b[7m", "\x1b[0m") if fancy else ("[", "]")
    out = []
    for number, hit in enumerate(hits, start=1):
        when = parse_iso(hit.at).astimezone(zone).strftime("%Y-%m-%d %H:%M") if hit.at else "?"
        out.append(_cut(f"{number}. {when}  {hit.model or 'unknown model'}", width))
        out.append(_cut(f"   session {hit.session_id}", width))
        out.append(_cut(f"   request {hit.request_id}", width))
        text = " ".join(hit.snippet.split())
        for line in textwrap.wrap(text, width - 5) or [""]:
            out.append("   > " + mark_snippet(line, start, end))
        out.append("   " + open_command(base_url, hit.session_id, token_env))
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------
# Queries (the only part that touches the database)


def connect_readonly(db_path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A read-only connection to the session database (never creates it)."""
    path = Path(os.path.expanduser(os.fspath(db_path)))
    if not path.is_file():
        raise ReportError(f"session database not found: {path} (is SQLite recording on? see --db-path)")
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT 1 FROM session_stats LIMIT 1").fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise ReportError(f"cannot read the session database {path}: {exc}") from None
    if version < MIN_SCHEMA:
        conn.close()
        # Read-only: the upgrade is the writer's job.
        raise ReportError(
            f"the session database {path} has schema v{version}, older than v{MIN_SCHEMA}: start the gateway "
            "with recording on, or run 'lunaroute-server import-sessions', to upgrade it"
        )
    return conn


def columns_of(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


def connect_postgres(dsn: str) -> Any:
    """
    A connection to the PostgreSQL store (L{lunaroute.sessions.postgres.PgConnection},
    taking this module's C{?} SQL), or a L{ReportError} naming the store, password masked.
    """
    import psycopg

    from lunaroute.secrets import mask_connection_string
    from lunaroute.sessions.postgres import SCHEMA_VERSION, PgConnection, connect, schema_version

    where = mask_connection_string(dsn)
    try:
        conn = connect(dsn, connect_timeout=10, migrate_to=None)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ReportError(f"cannot reach the PostgreSQL session store {where}: {first}") from None
    if schema_version(conn) != SCHEMA_VERSION:
        conn.close()
        raise ReportError(f"the PostgreSQL session store {where} is not migrated: run 'lunaroute-server migrate'")
    return PgConnection(conn)


def _database_errors() -> tuple[type[BaseException], ...]:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is optional
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


# The quarter of an hour a request was received in: C{2025-06-15T14:3}
# for 14:45-14:59 (the digit is the quarter).
_AT = "COALESCE(s.started_at, s.completed_at)"
_QUARTER = f"substr({_AT}, 1, 14) || (CAST(substr({_AT}, 15, 2) AS INTEGER) / 15)"


def query_usage_rows(
    conn: sqlite3.Connection,
    *,
    low: str | None = None,
    high: str | None = None,
    model: str | None = None,
    project: str | None = None,
    by_session: bool = False,
    postgres: bool = False,
) -> tuple[list[UsageRow], list[str]]:
    """
    The usage of the requests received in C{[low, high)} (ISO UTC), summed
    by the database per quarter of an hour, model, user agent (or stored
    client) and, with C{by_session}, session (see L{UsageRow}); the model
    (part of its id) and project (part of its path) filters applied in SQL.
    Also returns notes for the user (a filter the database cannot apply).
    C{postgres}: C{conn} is the PostgreSQL store's (L{connect_postgres}).
    """
    notes: list[str] = []
    session_columns = {"project", "client"} if postgres else columns_of(conn, "sessions")
    has_project = "project" in session_columns
    has_client = "client" in session_columns
    join = " LEFT JOIN sessions AS se ON se.session_id = s.session_id" if has_project or has_client else ""
    # A request counts when it was received (started_at), or finished when
    # that is unknown.  Written as an OR rather than COALESCE() so that an
    # index leading with started_at can serve the range.
    where: list[str] = []
    params: list[Any] = []
    bounds = [(op, value) for op, value in ((">=", low), ("<", high)) if value is not None]
    if bounds:
        started = " AND ".join(f"s.started_at {op} ?" for op, _ in bounds)
        completed = " AND ".join(f"s.completed_at {op} ?" for op, _ in bounds)
        where.append(f"(({started}) OR (s.started_at IS NULL AND {completed}))")
        params.extend(value for _, value in bounds)
        params.extend(value for _, value in bounds)
    else:
        where.append(f"{_AT} IS NOT NULL")
    if model:
        where.append("instr(lower(COALESCE(s.model_used, s.model_requested, '')), lower(?)) > 0")
        params.append(model)
    if project:
        if has_project:
            where.append("instr(COALESCE(se.project, ''), ?) > 0")
            params.append(project)
        else:
            notes.append(
                "this database records no project yet (it comes with session schema v4); "
                "--project filtered nothing"
            )
    keys = [
        _QUARTER,
        "COALESCE(s.model_used, s.model_requested)",
        "se.client" if has_client else "NULL",
        "s.user_agent",
        "s.session_id" if by_session else "NULL",
    ]
    # OpenAI's input includes its cache reads: the report's input is net of them.
    net_input = (
        "CASE WHEN s.dialect LIKE 'openai%' THEN MAX(0, s.input_tokens - s.cache_read_tokens) "
        "ELSE s.input_tokens END"
    )
    if postgres:
        where = [w.replace("instr(", "strpos(") for w in where]
        net_input = net_input.replace("MAX(0, ", "GREATEST(0, ")
    sql = (
        f"SELECT MIN({_AT}) AS first_at, MAX({_AT}) AS last_at, "
        f"{keys[1]} AS model, {keys[2]} AS client, s.user_agent AS user_agent, {keys[4]} AS session_id, "
        f"COUNT(*) AS requests, COUNT(s.estimated_cost_usd) AS priced, SUM(s.estimated_cost_usd) AS cost, "
        f"SUM({net_input}) AS input_tokens, SUM(s.output_tokens) AS output_tokens, "
        "SUM(s.cache_creation_tokens) AS cache_creation_tokens, SUM(s.cache_read_tokens) AS cache_read_tokens "
        f"FROM session_stats AS s{join} WHERE " + " AND ".join(where) + " GROUP BY " + ", ".join(k for k in keys if k != "NULL")
    )
    rows = []
    for record in conn.execute(sql, params):
        row = usage_row(dict(record))
        if row is not None:
            rows.append(row)
    return rows, notes


def _fts_problem(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return any(
        part in text
        for part in ("fts5", "syntax error", "no such column", "unterminated string", "unknown special query")
    )


# How many of the most recently recorded matching turns a search ranks by
# default.  bm25() costs about a microsecond per matching row, and a word
# of Claude Code's system prompt matches every turn: ranking a window keeps a
# search fast however big the store grows (see docs/performance.md).
SEARCH_WINDOW = 5_000


@dataclass
class SearchResult:
    hits: list[SearchHit]
    # True when more turns matched than the window ranked.
    windowed: bool = False
    window: int = 0


def query_search(
    conn: sqlite3.Connection, query: str, limit: int = 20, window: int | None = SEARCH_WINDOW
) -> SearchResult:
    """
    The turns whose request, response or thinking text matches the FTS5
    C{query} (phrases, C{foo*}, C{AND}/C{OR}/C{NOT}, C{response_text:
    word}), best first: by bm25 among the C{window} most recently recorded
    matching turns (all of them when C{window} is C{None} or 0).  A
    malformed query raises L{ReportError} with exit status 2.
    """
    if not query.strip():
        raise ReportError("empty search query", EXIT_USAGE)
    try:
        low = None
        if window:
            # The window's oldest turn: FTS5 walks the matches newest first
            # and stops there, without ranking anything.
            edge = conn.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
                (query, int(window)),
            ).fetchone()
            low = edge[0] + 1 if edge is not None else None
        rows = conn.execute(
            "SELECT s.session_id, s.request_id, COALESCE(s.started_at, s.completed_at) AS at, "
            "COALESCE(s.model_used, s.model_requested) AS model, "
            "snippet(messages_fts, -1, ?, ?, '…', 16) AS snippet, bm25(messages_fts) AS score "
            "FROM messages_fts JOIN session_stats AS s ON s.id = messages_fts.rowid "
            "WHERE messages_fts MATCH ? AND messages_fts.rowid >= ? ORDER BY score LIMIT ?",
            (HIT_START, HIT_END, query, low if low is not None else 0, int(limit)),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if _fts_problem(exc):
            raise ReportError(f"bad search query {query!r}: {exc} (see docs/reports.md for the syntax)", EXIT_USAGE) from None
        raise ReportError(f"search failed: {exc}") from None
    hits = [
        SearchHit(
            session_id=row["session_id"],
            request_id=row["request_id"],
            at=row["at"],
            model=row["model"],
            snippet=row["snippet"] or "",
            score=float(row["score"]),
        )
        for row in rows
    ]
    return SearchResult(hits, windowed=low is not None, window=int(window or 0))


def query_search_postgres(conn: Any, query: str, limit: int = 20, window: int | None = SEARCH_WINDOW) -> SearchResult:
    """L{query_search} over the PostgreSQL store (its query language: docs/postgres.md)."""
    from lunaroute.sessions.postgres import PostgresQueries
    from lunaroute.sessions.store import _CLOSE, _OPEN, BadParameter

    if not query.strip():
        raise ReportError("empty search query", EXIT_USAGE)
    queries = PostgresQueries(conn)
    try:
        rows = queries.search_rows(query, limit, "query", window or None)
        windowed = bool(window) and queries.more_matches_than(query, int(window or 0), "query")
    except BadParameter as exc:
        raise ReportError(f"bad search query {query!r}: {exc.message} (see docs/postgres.md)", EXIT_USAGE) from None
    hits = [
        SearchHit(
            session_id=row["session_id"],
            request_id=row["request_id"],
            at=row["started_at"] or row["completed_at"],
            model=row["model_used"] or row["model_requested"],
            snippet=row["snippet"].replace(_OPEN, HIT_START).replace(_CLOSE, HIT_END),
            score=float(row["score"]),
        )
        for row in rows
    ]
    return SearchResult(hits, windowed=windowed, window=int(window or 0))


# --------------------------------------------------------------------------
# The commands


def _output_shape(out: TextIO) -> tuple[int, bool]:
    """Width and fanciness: a terminal's width with box lines, else 80 plain columns."""
    try:
        tty = out.isatty()
    except (AttributeError, ValueError):
        tty = False
    if not tty or os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return DEFAULT_WIDTH, False
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns, True


def _settings(config: str | None) -> Any:
    from lunaroute.config import load_settings

    try:
        return load_settings(config, env=os.environ)
    except ConfigError as exc:
        raise ReportError(f"configuration error: {exc}") from None


def _postgres_dsn(args: argparse.Namespace) -> str | None:
    """
    The PostgreSQL store to read: C{--postgres DSN}, C{--postgres} alone
    (the configured one), or, without C{--db-path}, the configured store
    when C{session_recording.postgres.enabled}; else C{None} (SQLite).
    """
    option = getattr(args, "postgres", None)
    if option:
        return str(option)
    if option is None and getattr(args, "db_path", None):
        return None
    postgres = _settings(args.config).session_recording.postgres
    if option is not None:
        if not postgres.connection_string:
            raise ReportError("--postgres needs a connection string, or session_recording.postgres in the config")
        return str(postgres.connection_string)
    return str(postgres.connection_string) if postgres.enabled and postgres.connection_string else None


def _db_path(args: argparse.Namespace) -> str:
    if args.db_path:
        return str(os.path.expanduser(args.db_path))
    return str(os.path.expanduser(_settings(args.config).session_recording.db_path))


def run_report(args: argparse.Namespace, out: TextIO | None = None, now: datetime | None = None) -> int:
    """C{lunaroute-server report KIND}; returns the exit status."""
    out = out or sys.stdout
    try:
        zone = parse_timezone(args.timezone)
        since = parse_day(args.since) if args.since else None
        until = parse_day(args.until) if args.until else None
        client = client_choice(args.client) if args.client else None
        low, high = day_bounds(since, until, zone)
        dsn = _postgres_dsn(args)
        conn = connect_postgres(dsn) if dsn else connect_readonly(_db_path(args))
        try:
            rows, notes = query_usage_rows(
                conn, low=low, high=high, model=args.model, project=args.project, by_session=args.kind == "session",
                postgres=dsn is not None,
            )
        except _database_errors() as exc:
            raise ReportError(f"cannot read the session database: {exc}") from None
        finally:
            conn.close()
        rows = filter_rows(rows, client=client)  # model and project were filtered in SQL
        report = build_report(
            args.kind,
            rows,
            zone,
            since=since,
            until=until,
            filters={"model": args.model, "client": client, "project": args.project},
            notes=notes,
            now=now,
        )
    except ReportError as exc:
        print(f"lunaroute-server: {exc}", file=sys.stderr)
        return exc.status
    if args.json:
        json.dump(report.to_json(breakdown=args.breakdown), out, indent=2)
        out.write("\n")
    else:
        width, fancy = _output_shape(out)
        out.write(render_report(report, breakdown=args.breakdown, width=width, fancy=fancy))
    return 0


def run_search(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """C{lunaroute-server search QUERY}; returns the exit status."""
    out = out or sys.stdout
    try:
        if args.limit < 1:
            raise ReportError("--limit must be at least 1", EXIT_USAGE)
        zone = parse_timezone(args.timezone)
        try:
            settings = _settings(args.config)
        except ReportError:
            if not args.db_path:
                raise
            settings = None  # the database is given: only the API address falls back to its default
        dsn = _postgres_dsn(args) if settings is not None or getattr(args, "postgres", None) else None
        window = None if args.all else SEARCH_WINDOW
        if dsn:
            pg = connect_postgres(dsn)
            try:
                result = query_search_postgres(pg, args.query, args.limit, window)
            except _database_errors() as exc:
                raise ReportError(f"search failed: {exc}") from None
            finally:
                pg.close()
        else:
            db_path = os.path.expanduser(args.db_path) if args.db_path else settings.session_recording.db_path
            conn = connect_readonly(db_path)
            try:
                result = query_search(conn, args.query, args.limit, window)
            finally:
                conn.close()
    except ReportError as exc:
        print(f"lunaroute-server: {exc}", file=sys.stderr)
        return exc.status
    base_url, token_env = _api_base(settings)
    if args.json:
        json.dump(
            {
                "query": args.query,
                "ranked_recent_only": result.windowed,
                "window": result.window or None,
                "hits": [hit.to_json(base_url) for hit in result.hits],
            },
            out,
            indent=2,
        )
        out.write("\n")
    else:
        width, fancy = _output_shape(out)
        out.write(render_hits(result.hits, base_url, width=width, fancy=fancy, zone=zone, token_env=token_env))
        if result.windowed:
            note = (
                f"Note: more than {result.window:,} turns match; these are the best of the "
                f"{result.window:,} most recently recorded. --all ranks every match (slower)."
            )
            out.write("\n".join(textwrap.wrap(note, width)) + "\n")
    return 0


def _api_base(settings: Any) -> tuple[str, str | None]:
    """Where the session API listens (the proxy port), and the token variable to send if one is set."""
    host, port, token = "127.0.0.1", 8081, None
    if settings is not None:
        host, port = settings.host, settings.port
        token = getattr(settings.http_server, "auth_token", None)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}", ("LUNAROUTE_AUTH_TOKEN" if token else None)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=REPORT_KINDS, help="how to group the usage")
    parser.add_argument("--since", metavar="DATE", help="first day included (YYYY-MM-DD or YYYYMMDD)")
    parser.add_argument("--until", metavar="DATE", help="last day included (YYYY-MM-DD or YYYYMMDD)")
    parser.add_argument("--timezone", "-z", metavar="ZONE", help="IANA time zone for days (default: local)")
    parser.add_argument("--model", help="only models whose id contains this (e.g. sonnet)")
    parser.add_argument("--client", help="only requests from claude-code, codex or other")
    parser.add_argument("--project", help="only sessions whose project contains this (schema v4)")
    parser.add_argument("--breakdown", "-b", action="store_true", help="a row per model under each line")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--db-path", metavar="PATH", help="SQLite session database (default from config)")
    parser.add_argument(
        "--postgres", nargs="?", const="", metavar="DSN",
        help="read the PostgreSQL store: this connection string, or alone the configured one "
        "(the default when session_recording.postgres is enabled)",
    )
    parser.add_argument("--config", "-c", help="config file to take the database path from")


def add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help='FTS5 query: words, "a phrase", prefix*, AND/OR/NOT, response_text: word')
    parser.add_argument("--limit", "-n", type=int, default=20, help="most turns to show (default 20)")
    parser.add_argument(
        "--all",
        action="store_true",
        help=f"rank every matching turn, not only the {SEARCH_WINDOW:,} most recently recorded (slower)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--timezone", "-z", metavar="ZONE", help="IANA time zone for times (default: local)")
    parser.add_argument("--db-path", metavar="PATH", help="SQLite session database (default from config)")
    parser.add_argument(
        "--postgres", nargs="?", const="", metavar="DSN",
        help="search the PostgreSQL store: this connection string, or alone the configured one "
        "(the default when session_recording.postgres is enabled)",
    )
    parser.add_argument("--config", "-c", help="config file to take the database path and API address from")
