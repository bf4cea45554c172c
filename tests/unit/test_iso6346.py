"""ISO 6346 container numbers: published examples, every rejection reason, and the check digit as a property."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.core.iso6346 import check_digit, is_valid, letter_value, normalize, validate

# CSQU 305438 3 is the worked example of the standard (weighted sum 6185, 6185 mod 11 = 3);
# MEDU8707688 and MSKU9070323 are numbers painted on boxes in service.
PUBLISHED = ["CSQU3054383", "MEDU8707688", "MSKU9070323"]

LETTERS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
PREFIX = st.builds(
    lambda owner, cat, serial: owner + cat + serial,
    LETTERS,
    st.sampled_from("UJZ"),
    st.text(alphabet="0123456789", min_size=6, max_size=6),
)


@pytest.mark.parametrize("number", PUBLISHED)
def test_published_numbers_validate(number: str) -> None:
    assert is_valid(number)
    assert validate(number) == number
    assert check_digit(number[:10]) == int(number[10])


def test_worked_example_of_the_standard() -> None:
    assert sum(letter_value(ch) << i for i, ch in enumerate("CSQU305438")) == 6185
    assert check_digit("CSQU305438") == 3


def test_letter_values_skip_multiples_of_eleven() -> None:
    values = [letter_value(ch) for ch in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"]
    assert values[:3] == [10, 12, 13]  # A, B (11 skipped), C
    assert letter_value("K") == 21 and letter_value("L") == 23  # 22 skipped
    assert letter_value("U") == 32 and letter_value("V") == 34  # 33 skipped
    assert letter_value("Z") == 38
    assert not any(v % 11 == 0 for v in values)
    assert letter_value("7") == 7


def test_remainder_ten_gives_zero() -> None:
    # ABCU123456: weighted sum 1715, 1715 mod 11 = 10, so the digit is 0
    assert check_digit("ABCU123456") == 0
    assert is_valid("ABCU1234560")


def test_normalize_strips_print_layout() -> None:
    assert normalize(" csqu 305438-3 ") == "CSQU3054383"
    assert validate("csqu 305438-3") == "CSQU3054383"
    assert is_valid("CSQU 305438 3")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("CSQU305438", "bad length"),
        ("CSQU30543833", "bad length"),
        ("", "bad length"),
        ("C5QU3054383", "bad owner code"),
        ("CSQX3054383", "bad category"),
        ("CSQU30A4383", "bad serial number"),
        ("CSQU305438X", "bad check digit"),
        ("CSQU3054384", "check digit mismatch: expected 3, got 4"),
        ("ÄSQU3054383", "bad owner code"),
    ],
)
def test_validate_names_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        validate(text)
    assert not is_valid(text)


def test_check_digit_needs_ten_characters() -> None:
    with pytest.raises(ValueError, match="10 characters"):
        check_digit("CSQU30543")
    with pytest.raises(ValueError, match="not an ISO 6346 character"):
        check_digit("CSQU30543!")


@given(PREFIX)
def test_computed_digit_validates_and_every_other_digit_fails(prefix: str) -> None:
    digit = check_digit(prefix)
    assert 0 <= digit <= 9
    assert validate(prefix + str(digit)) == prefix + str(digit)
    for other in range(10):
        if other != digit:
            assert not is_valid(prefix + str(other))
            with pytest.raises(ValueError, match=f"expected {digit}, got {other}"):
                validate(prefix + str(other))


@given(PREFIX, st.integers(min_value=4, max_value=9), st.sampled_from("0123456789"))
def test_serial_digit_substitutions_are_caught(prefix: str, position: int, replacement: str) -> None:
    # weights 2**i are never 0 mod 11 and two digits differ by less than 11, so the sum mod 11 always
    # moves; only the remainder-10-becomes-0 rule can hide it, which is why such serials are discouraged
    number = prefix + str(check_digit(prefix))
    changed = number[:position] + replacement + number[position + 1 :]
    if changed == number:
        return

    def remainder(first10: str) -> int:
        return sum(letter_value(ch) << i for i, ch in enumerate(first10)) % 11

    if {remainder(number[:10]), remainder(changed[:10])} != {0, 10}:
        assert not is_valid(changed)
