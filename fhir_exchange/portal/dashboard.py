"""The operators' dashboard: the network's figures from ``$consult-stats``, called through the router as
the signed-in user (so an institution sees the consults it requested or was asked for), once per week
for the per-week chart and once over the whole window for turnaround, recommendations and follow-ups.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from fhir_exchange.interactions.stats import groups_of
from fhir_exchange.portal.fhir import Fhir

WEEKS = 8


@dataclass(slots=True)
class Pair:
    """One hub - partner pair of the network, summed over departments."""

    label: str
    per_week: list[int]
    requested: int = 0
    completed: int = 0
    rejected: int = 0
    accept_median: float | None = None
    accept_p90: float | None = None
    note_median: float | None = None
    note_p90: float | None = None
    follow_ups_due: int = 0
    follow_ups_overdue: int = 0


@dataclass(slots=True)
class Dashboard:
    start: str
    end: str
    weeks: list[str]  # the Monday of each week
    pairs: list[Pair]
    recommendations: dict[str, int] = field(default_factory=dict)
    transfers_avoided: int = 0


def week_starts(today: date, weeks: int = WEEKS) -> list[date]:
    monday = today - timedelta(days=today.weekday())
    return [monday - timedelta(weeks=weeks - 1 - i) for i in range(weeks)]


async def stats(fhir: Fhir, start: date, end: date) -> list[dict[str, Any]]:
    answer = (await fhir.call("GET", "$consult-stats", [("period", f"{start.isoformat()}/{end.isoformat()}")])).json()
    return list(groups_of(answer or {}))


def _name(group: dict[str, Any], names: dict[str, str], key: str) -> str:
    return names.get(str(group.get(key) or ""), str(group.get(key) or "-"))


async def load(fhir: Fhir, today: date) -> Dashboard:
    starts = week_starts(today)
    end = today
    names: dict[str, str] = {}
    pairs: dict[tuple[str, str], Pair] = {}

    async def names_of(groups: list[dict[str, Any]]) -> None:
        for g in groups:
            for key in ("hub", "partner"):
                ref = str(g.get(key) or "")
                if ref and ref not in names:
                    doc = await fhir.read(ref)
                    names[ref] = str((doc or {}).get("name") or ref)

    def pair(g: dict[str, Any]) -> Pair:
        key = (str(g.get("hub") or ""), str(g.get("partner") or ""))
        if key not in pairs:
            pairs[key] = Pair(f"{_name(g, names, 'hub')} - {_name(g, names, 'partner')}", [0] * len(starts))
        return pairs[key]

    for i, monday in enumerate(starts):
        groups = await stats(fhir, monday, min(monday + timedelta(days=6), end))
        await names_of(groups)
        for g in groups:
            pair(g).per_week[i] += int(g.get("requested") or 0)
    whole = await stats(fhir, starts[0], end)
    await names_of(whole)
    board = Dashboard(starts[0].isoformat(), end.isoformat(), [d.isoformat()[5:] for d in starts], [])
    for g in whole:
        p = pair(g)
        p.requested += int(g.get("requested") or 0)
        p.completed += int(g.get("completed") or 0)
        p.rejected += int(g.get("rejected") or 0)
        p.follow_ups_due += int(g.get("follow-ups-due") or 0)
        p.follow_ups_overdue += int(g.get("follow-ups-overdue") or 0)
        # Several departments of one pair: the pair shows the slowest department's figures (the one to act on).
        for attr, part, key in (("accept_median", "turnaround-accept", "median"),
                                ("accept_p90", "turnaround-accept", "p90"),
                                ("note_median", "turnaround-note", "median"), ("note_p90", "turnaround-note", "p90")):
            value = (g.get(part) or {}).get(key)
            if value is not None:
                current = getattr(p, attr)
                setattr(p, attr, float(value) if current is None else max(current, float(value)))
        for code, count in (g.get("recommendation") or {}).items():
            board.recommendations[code] = board.recommendations.get(code, 0) + int(count or 0)
        board.transfers_avoided += int(g.get("transfers-avoided") or 0)
    board.pairs = sorted(pairs.values(), key=lambda p: p.label)
    return board
