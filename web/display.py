"""How the dashboard shows numbers and times: counts and amounts with thousands separators
(1,234,567.89), times in UTC to the second. Amounts are grouped on their digits, never
through a float, so what is shown is exactly what is stored."""
from __future__ import annotations

import re
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
