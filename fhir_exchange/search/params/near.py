"""``near`` on Location (https://hl7.org/fhir/R4/location.html#positional and
https://hl7.org/fhir/R4/search.html#special), the one ``special`` parameter this server indexes.

``near=[latitude]|[longitude]|[distance]|[units]``: Locations whose ``position`` lies within
``distance`` (great-circle, haversine on a sphere of radius 6371.0088 km, the IUGG mean radius) of
the point. ``units`` is a UCUM code: ``km`` (the default), ``m`` or ``[mi_i]``; the distance defaults to
50 km. Several comma-separated values are ORed. Latitude must lie in [-90, 90], longitude in
[-180, 180], the distance be non-negative: anything else is a 400 naming the parameter.

Index: one row per position, latitude in ``low`` and longitude in ``high`` (the IndexEntry columns,
so no new entry field is needed). Stores first narrow by a bounding box on those indexed columns (an
enclosing box, slightly widened so float rounding never drops a true match), then check the exact
distance with :func:`within`, the same Python function the in-memory matcher uses, so every store
agrees to the last bit: SQLite calls it as the SQL function ``fhx_near`` registered on each
connection, MongoDB runs the box as a staged query and checks the candidates in Python.
"""

from __future__ import annotations

import math
from typing import Any

from fhir_exchange.errors import invalid
from fhir_exchange.search.index import IndexEntry
from fhir_exchange.search.query import NearValue

TABLE = "search_near"
COLUMNS = ("low", "high")  # latitude, longitude (degrees)
SORT_COLUMN = "low"  # unused: near cannot be a _sort key (parse rejects special parameters)
MODIFIERS = frozenset({"missing"})

EARTH_RADIUS_KM = 6371.0088
DEFAULT_KM = 50.0
UNITS_KM = {"km": 1.0, "m": 0.001, "[mi_i]": 1.609344}
SQL_FUNCTION = "fhx_near"


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def extract(code: str, item: tuple[Any, str | None]) -> list[IndexEntry]:
    node = item[0]
    if not isinstance(node, dict):
        return []
    lat, lon = _number(node.get("latitude")), _number(node.get("longitude"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return []  # not a searchable point (the validator reports it; search ignores it)
    return [IndexEntry(code, "special", low=lat, high=lon)]


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def within(lat: float | None, lon: float | None, qlat: float, qlon: float, km: float) -> int:
    """1 when (lat, lon) is within ``km`` of (qlat, qlon): the exact check of every store."""
    if lat is None or lon is None:
        return 0
    return int(distance_km(lat, lon, qlat, qlon) <= km)


def parse_value(raw: str, modifier: str | None, name: str) -> NearValue:
    parts = raw.split("|")
    if len(parts) < 2 or len(parts) > 4:
        raise invalid(f"Invalid value '{raw}' for '{name}': expected latitude|longitude[|distance[|units]]", name)
    try:
        lat, lon = float(parts[0]), float(parts[1])
        dist = float(parts[2]) if len(parts) > 2 and parts[2] != "" else None
    except ValueError:
        raise invalid(f"Invalid value '{raw}' for '{name}': latitude, longitude and distance are numbers",
                      name) from None
    units = parts[3] if len(parts) > 3 and parts[3] != "" else "km"
    if units not in UNITS_KM:
        raise invalid(f"Invalid units '{units}' for '{name}': use km, m or [mi_i]", name)
    if not (math.isfinite(lat) and -90 <= lat <= 90 and math.isfinite(lon) and -180 <= lon <= 180):
        raise invalid(f"Invalid position in '{name}': latitude in [-90, 90], longitude in [-180, 180]", name)
    km = DEFAULT_KM if dist is None else dist * UNITS_KM[units]
    if not math.isfinite(km) or km < 0:
        raise invalid(f"Invalid distance in '{name}': a non-negative number", name)
    return NearValue(lat, lon, km)


def box(v: NearValue) -> tuple[float, float, list[tuple[float, float]]]:
    """(lat_min, lat_max, longitude ranges) enclosing the circle: two ranges across the antimeridian,
    the whole circle of longitudes when the circle reaches a pole. Widened by a small margin (1e-6
    relative plus 1 m) so that rounding never excludes a point the exact check accepts."""
    ang = (v.km * (1 + 1e-6) + 0.001) / EARTH_RADIUS_KM  # radians
    dlat = math.degrees(ang)
    lo, hi = v.lat - dlat, v.lat + dlat
    if lo <= -90 or hi >= 90 or ang >= math.pi / 2:
        return max(lo, -90.0), min(hi, 90.0), [(-180.0, 180.0)]
    s = math.sin(ang) / math.cos(math.radians(v.lat))
    if s >= 1:
        return lo, hi, [(-180.0, 180.0)]
    dlon = math.degrees(math.asin(s))
    west, east = v.lon - dlon, v.lon + dlon
    if west < -180:
        return lo, hi, [(west + 360, 180.0), (-180.0, east)]
    if east > 180:
        return lo, hi, [(west, 180.0), (-180.0, east - 360)]
    return lo, hi, [(west, east)]


def sql(v: NearValue, modifier: str | None, alias: str) -> tuple[str, list[Any]]:
    lat_lo, lat_hi, lons = box(v)
    lon_cond = " OR ".join(f"{alias}.high BETWEEN ? AND ?" for _ in lons)
    # The box lets the (param, low, high) index narrow the rows; fhx_near decides exactly.
    return (f"{alias}.low BETWEEN ? AND ? AND ({lon_cond}) "
            f"AND {SQL_FUNCTION}({alias}.low, {alias}.high, ?, ?, ?)",
            [lat_lo, lat_hi, *[x for r in lons for x in r], v.lat, v.lon, v.km])


def match(e: IndexEntry, v: NearValue, modifier: str | None) -> bool:
    assert isinstance(e.low, float) and isinstance(e.high, float)
    return bool(within(e.low, e.high, v.lat, v.lon, v.km))


# -- MongoDB: ``_s.geo`` holds ``{p, lat, lon}`` per position. The box is a staged query (see
# mongo_search.Compiler.near) whose candidates are checked with :func:`within` in Python.


def mongo_index(e: IndexEntry) -> list[tuple[str, Any]]:
    return [("geo", {"p": e.param, "lat": e.low, "lon": e.high})]


def mongo(v: NearValue, modifier: str | None, code: str, at: str = "_s.") -> dict[str, Any]:
    """The bounding-box prefilter only (the exact check runs on its candidates)."""
    lat_lo, lat_hi, lons = box(v)
    ranges = [{"lon": {"$gte": a, "$lte": b}} for a, b in lons]
    elem: dict[str, Any] = {"p": code, "lat": {"$gte": lat_lo, "$lte": lat_hi}}
    if len(ranges) == 1:
        elem.update(ranges[0])
    else:
        elem["$or"] = ranges
    return {f"{at}geo": {"$elemMatch": elem}}
