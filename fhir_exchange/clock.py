"""Clock and id generation, injected so tests can be deterministic."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Clock:
    now: Callable[[], datetime] = field(default=utc_now)
    new_id: Callable[[], str] = field(default=new_id)


def instant(dt: datetime) -> str:
    """A FHIR ``instant`` in UTC with millisecond precision (sortable as text)."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
