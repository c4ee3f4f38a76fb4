"""How the dashboard shows numbers and times: counts and amounts with thousands separators
(1,234,567.89), times in UTC to the second, and the pace of a running activity (rows per
second and the time left). Amounts are grouped on their digits, never
through a float, so what is shown is exactly what is stored."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from web.wallets import money


def when(moment: datetime | str | None) -> str:
    """A time as the pages show it: UTC to the second."""
    if moment is None:
        return "–"
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def count(number: int | None) -> str:
    """A count with thousands separators: 1,000,000."""
    return "–" if number is None else f"{number:,}"


#: A decimal string as the API writes amounts: "-1234567.89", "1000".
DECIMAL = re.compile(r"(-?)(\d+)(\.\d+)?")


def grouped(decimal: str) -> str:
    """A decimal string with thousands separators ("1,234,567.89"); any other text (a cell of
    an INVALID row) as it is. Works on the digits, so an amount is never rounded."""
    match = DECIMAL.fullmatch(decimal)
    if match is None:
        return decimal
    sign, whole, fraction = match.groups()
    return f"{sign}{int(whole):,}{fraction or ''}"


def amount(minor: int, currency: str) -> str:
    """Minor units as major units with thousands separators: 123456789 SGD -> "1,234,567.89"."""
    return grouped(money(minor, currency))


#: What the pages show for a rate or an ETA that does not apply or cannot be measured yet.
NOT_MEASURABLE = "—"
#: The shortest time since an activity started over which its pace is measured, in seconds:
#: before it, the first chunk alone would make a rate of noise.
PACE_MEASURED_AFTER_S = 1.0


@dataclass(frozen=True)
class Pace:
    """How fast a PROCESSING activity settles its rows, and when it should be done."""

    rows_per_s: float | None
    #: Seconds until its pending rows are settled at that rate; None when not measurable.
    eta_s: float | None


def pace(activity: dict, now: datetime) -> Pace:
    """The pace of an activity as the API renders it (`status`, `started_at` RFC 3339 or None, and
    the row counters), measured at `now`: rows settled (successful, failed or cancelled) over the
    time since it started, and its `pending_records` at that rate. Both None unless it is
    PROCESSING, started at least PACE_MEASURED_AFTER_S ago, and has settled a row. After a retry
    the count includes rows settled by earlier runs, so the rate then reads high."""
    started_at = activity.get("started_at")
    if activity.get("status") != "PROCESSING" or not started_at:
        return Pace(None, None)
    if isinstance(started_at, str):
        started_at = datetime.fromisoformat(started_at.replace("Z", "+00:00"))
    elapsed_s = (now - started_at).total_seconds()
    settled = activity["successful_records"] + activity["failed_records"] + activity["cancelled_records"]
    if elapsed_s < PACE_MEASURED_AFTER_S or settled <= 0:
        return Pace(None, None)
    rows_per_s = settled / elapsed_s
    return Pace(rows_per_s, activity["pending_records"] / rows_per_s)


def rate_text(measured: Pace) -> str:
    """"12,345 rows/s" (whole rows from 10 up, one decimal below), or "—"."""
    if measured.rows_per_s is None:
        return NOT_MEASURABLE
    rate = measured.rows_per_s
    return f"{rate:,.0f} rows/s" if rate >= 10 else f"{rate:.1f} rows/s"


def eta_text(measured: Pace) -> str:
    """The time left, to the second: "45 s", "3 min 05 s", "2 h 07 min", "1,250 h 00 min"; or "—"."""
    if measured.eta_s is None:
        return NOT_MEASURABLE
    seconds = math.ceil(measured.eta_s)
    hours, minutes, seconds = seconds // 3600, seconds // 60 % 60, seconds % 60
    if hours:
        return f"{hours:,} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def pace_shown(activity: dict, now: datetime | None = None) -> dict[str, str]:
    """The pace as the pages show it: {"pace_rate", "pace_eta"}, measured now unless told."""
    measured = pace(activity, now or datetime.now(timezone.utc))
    return {"pace_rate": rate_text(measured), "pace_eta": eta_text(measured)}
