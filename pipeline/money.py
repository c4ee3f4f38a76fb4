"""Money: an integer number of minor units with its ISO 4217 currency.

`Decimal` appears only here, at the edge, to parse and format the wire form ("12.50").
Parsing is strict on purpose: a payments API that guesses what "1e3" or "12.345 SGD"
meant moves the wrong amount of money.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: ISO 4217 minor units (digits after the decimal point) of the currencies we know.
MINOR_UNITS = {
    "AED": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CNY": 2, "CZK": 2,
    "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "IDR": 2, "INR": 2, "JOD": 3, "JPY": 0,
    "KRW": 0, "KWD": 3, "MYR": 2, "NOK": 2, "NZD": 2, "OMR": 3, "PHP": 2, "PLN": 2,
    "SEK": 2, "SGD": 2, "THB": 2, "TND": 3, "TWD": 2, "USD": 2, "VND": 0, "ZAR": 2,
}

#: The largest amount one movement may carry, in minor units. Far below 2**63 so that
#: sums of millions of postings cannot overflow PostgreSQL's bigint.
AMOUNT_MINOR_MAX = 10**15
#: The range of a balance, in minor units: PostgreSQL's bigint, where balances are stored.
#: A movement that would take any wallet, a user's or a system shard, past it is refused
#: here (`pipeline.ledger.post`, the bulk chunk's check) before the database sees it.
BALANCE_MINOR_MAX = 2**63 - 1
BALANCE_MINOR_MIN = -(2**63)
#: The longest amount string read, in characters: room for AMOUNT_MINOR_MAX with leading
#: zeros, and far below the 4,300 digits past which int() raises instead of parsing.
AMOUNT_TEXT_LENGTH_MAX = 32

_AMOUNT_PATTERN = re.compile(r"(?P<units>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")


class MoneyError(ValueError):
    """An amount or currency that cannot be accepted; `reason` says why, for humans."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Currency:
    code: str
    minor_units: int


def currency(code: object, supported: frozenset[str] | None = None) -> Currency:
    """The currency for an ISO 4217 code, if we know it and it is in `supported`."""
    if not isinstance(code, str) or code not in MINOR_UNITS:
        raise MoneyError(f"unknown currency {code!r}: expected an ISO 4217 code such as 'SGD'")
    if supported is not None and code not in supported:
        raise MoneyError(f"currency {code} is not supported here: use one of {', '.join(sorted(supported))}")
    return Currency(code, MINOR_UNITS[code])


def parse_amount(text: object, unit: Currency) -> int:
    """Parses a positive decimal string in major units into minor units.

    Rejects numbers that are not strings, signs, exponents, spaces, zero, more
    fractional digits than the currency has, and strings longer than AMOUNT_TEXT_LENGTH_MAX.
    """
    if not isinstance(text, str):
        raise MoneyError("must be a decimal string such as \"12.50\", not a number")
    if len(text) > AMOUNT_TEXT_LENGTH_MAX:
        raise MoneyError(f"must be at most {AMOUNT_TEXT_LENGTH_MAX} characters long")
    match = _AMOUNT_PATTERN.fullmatch(text)
    if match is None:
        raise MoneyError(f"{text[:40]!r} is not a plain decimal such as \"12.50\"")
    fraction = match["fraction"] or ""
    if len(fraction) > unit.minor_units:
        raise MoneyError(f"{unit.code} allows at most {unit.minor_units} digits after the point")
    minor = int(match["units"] + fraction.ljust(unit.minor_units, "0"))
    if minor == 0:
        raise MoneyError("must be greater than zero")
    if minor > AMOUNT_MINOR_MAX:
        raise MoneyError(f"must be at most {format_amount(AMOUNT_MINOR_MAX, unit)}")
    return minor


def format_amount(minor: int, unit: Currency) -> str:
    """Formats minor units as a decimal string in major units ("-12.50", "1000")."""
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(unit.minor_units + 1, "0")
    if unit.minor_units == 0:
        return sign + digits
    return f"{sign}{digits[:-unit.minor_units]}.{digits[-unit.minor_units:]}"


def fee_for(amount_minor: int, basis_points: int) -> int:
    """The fee on an amount, rounded half-up to the minor unit."""
    assert amount_minor >= 0 and 0 <= basis_points <= 10_000
    return (amount_minor * basis_points + 5_000) // 10_000
