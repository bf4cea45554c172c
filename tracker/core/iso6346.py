"""ISO 6346 container numbers: normalisation and the check digit.

Customs results are routed to a container's tracker by its number, so a mistyped number
would silently attach a clearance to the wrong box (or to none) and open no access window.
The check digit catches every single-character error and most transpositions; anything
that fails it is refused at the edge with a reason an operator can act on.
"""

from __future__ import annotations

import string

__all__ = ["CATEGORIES", "check_digit", "is_valid", "letter_value", "normalize", "validate"]

CATEGORIES = frozenset("UJZ")
"""Equipment category identifiers: U freight container, J detachable equipment, Z trailer or chassis."""


def _letter_values() -> dict[str, int]:
    # Letters count from 10 upwards but skip 11, 22 and 33: multiples of the modulus would make
    # a letter worth the same as a digit shifted by one place, hiding some transcription errors.
    values: dict[str, int] = {}
    value = 10
    for letter in string.ascii_uppercase:
        if value % 11 == 0:
            value += 1
        values[letter] = value
        value += 1
    return values


_LETTER_VALUES = _letter_values()


def letter_value(char: str) -> int:
    """Numeric value of one character of the first ten (A=10, B=12, ..., Z=38; digits are themselves)."""
    if len(char) == 1 and char.isascii() and char.isdigit():
        return int(char)
    try:
        return _LETTER_VALUES[char]
    except KeyError:
        raise ValueError(f"{char!r} is not an ISO 6346 character (A-Z or 0-9)") from None


def normalize(text: str) -> str:
    """Container numbers arrive as printed on the door ("CSQU 305438-3"); compare them without layout."""
    return "".join(ch for ch in text if not ch.isspace() and ch != "-").upper()


def check_digit(first10: str) -> int:
    """The check digit of owner code + category + serial: weights 2**position, sum mod 11, then mod 10.

    A remainder of 10 gives 0 (the standard discourages such serials because the digit then no
    longer distinguishes them, but they exist and must validate).
    """
    if len(first10) != 10:
        raise ValueError(f"the check digit is computed over 10 characters, got {len(first10)}")
    total = sum(letter_value(ch) << i for i, ch in enumerate(first10))
    return total % 11 % 10


def _problem(container_no: str) -> str | None:
    """Why a normalised number is not valid, or None when it is."""
    if len(container_no) != 11:
        return f"bad length: expected 11 characters (4 letters, 6 digits, check digit), got {len(container_no)}"
    owner, category, serial, digit = container_no[:3], container_no[3], container_no[4:10], container_no[10]
    if not all(ch in _LETTER_VALUES for ch in owner):
        return f"bad owner code {owner!r}: expected 3 letters A-Z"
    if category not in CATEGORIES:
        return f"bad category {category!r}: expected U, J or Z"
    if not (serial.isascii() and serial.isdigit()):
        return f"bad serial number {serial!r}: expected 6 digits"
    if not (digit.isascii() and digit.isdigit()):
        return f"bad check digit {digit!r}: expected a digit"
    expected = check_digit(container_no[:10])
    if int(digit) != expected:
        return f"check digit mismatch: expected {expected}, got {digit}"
    return None


def is_valid(container_no: str) -> bool:
    """Layout is forgiven (spaces, hyphens, case) because it is how numbers are printed, not an error."""
    return _problem(normalize(container_no)) is None


def validate(text: str) -> str:
    """The normalised container number, or ValueError naming what is wrong with it."""
    number = normalize(text)
    problem = _problem(number)
    if problem is not None:
        raise ValueError(f"invalid container number {text!r}: {problem}")
    return number
