"""Money parsing and formatting, as properties over many generated values."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.money import AMOUNT_MINOR_MAX, MINOR_UNITS, MoneyError, currency, fee_for, format_amount, parse_amount

currencies = st.sampled_from(sorted(MINOR_UNITS)).map(currency)


@given(currencies, st.integers(min_value=1, max_value=AMOUNT_MINOR_MAX))
def test_formatting_then_parsing_gives_back_the_same_minor_units(unit, minor):
    assert parse_amount(format_amount(minor, unit), unit) == minor


@given(currencies, st.integers(min_value=-AMOUNT_MINOR_MAX, max_value=AMOUNT_MINOR_MAX))
def test_formatting_shows_exactly_the_currencys_digits(unit, minor):
    text = format_amount(minor, unit)
    fraction = text.partition(".")[2]
    assert len(fraction) == unit.minor_units


malformed = st.one_of(
    st.text(alphabet=" +-eE.,abc", min_size=1, max_size=6),
    st.builds(lambda n: f"{n}e2", st.integers(1, 999)),
    st.builds(lambda n: f"-{n}", st.integers(1, 999)),
    st.builds(lambda n: f" {n}", st.integers(1, 999)),
    st.builds(lambda n: f"{n}.", st.integers(0, 999)),
    st.sampled_from(["NaN", "nan", "Infinity", "", "0", "0.00", "1,000.00", "١٢"]),
)


@given(malformed)
def test_every_malformed_string_is_rejected_with_a_reason(text):
    with pytest.raises(MoneyError) as rejected:
        parse_amount(text, currency("SGD"))
    assert rejected.value.reason


@given(st.one_of(st.integers(), st.floats(), st.none(), st.booleans()))
def test_a_number_instead_of_a_string_is_rejected(value):
    with pytest.raises(MoneyError, match="string"):
        parse_amount(value, currency("SGD"))


@pytest.mark.parametrize("code, text", [("JPY", "1.5"), ("SGD", "1.005"), ("KWD", "1.0001")])
def test_more_fractional_digits_than_the_currency_allows_are_rejected(code, text):
    with pytest.raises(MoneyError, match="digits"):
        parse_amount(text, currency(code))


def test_kwd_has_three_decimals_and_jpy_none():
    assert parse_amount("1.234", currency("KWD")) == 1234
    assert format_amount(1234, currency("JPY")) == "1234"
    assert format_amount(5, currency("SGD")) == "0.05"


@pytest.mark.parametrize("amount, bps, fee", [(1000, 150, 15), (1, 5000, 1), (3, 1500, 0), (10, 5000, 5), (33, 1500, 5)])
def test_the_fee_is_rounded_half_up_to_the_minor_unit(amount, bps, fee):
    assert fee_for(amount, bps) == fee
