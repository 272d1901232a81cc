"""Identifier helpers: container numbers, manifest ids and seal numbers.

* **Container numbers** follow ISO 6346: a three-letter owner code, the
  equipment category letter (``U``, ``J`` or ``Z``), a six-digit serial and
  a check digit, e.g. ``BWFU1234565``.
* **Manifest ids** are Brackwater's own format ``BWF-YYYY-NNNNNN-C`` where
  ``C`` is a check letter computed with weights ``3, 7, 1`` over the digits
  of the year and sequence, taken modulo 20 into :data:`CHECK_LETTERS`.
* **Seal numbers** issued by Brackwater look like ``BW`` followed by seven
  digits (``BW0042117``).  Third-party seals are accepted in *lenient* mode.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from datetime import date

from .errors import IdentifierError

__all__ = [
    "CHECK_LETTERS",
    "ManifestRef",
    "IdSequence",
    "container_check_digit",
    "validate_container_number",
    "manifest_id",
    "parse_manifest_id",
    "validate_seal",
]

#: Alphabet used for the manifest id check letter (no vowels, no Y).
CHECK_LETTERS: str = "BCDFGHJKLMNPQRSTVWXZ"

_CONTAINER_RE = re.compile(r"^([A-Z]{3})([UJZ])(\d{6})(\d)$")
_MANIFEST_RE = re.compile(r"^BWF-(\d{4})-(\d{6})-([A-Z])$")
_STRICT_SEAL_RE = re.compile(r"^BW\d{7}$")
_LENIENT_SEAL_RE = re.compile(r"^[A-Z0-9]{6,12}$")


def _letter_values() -> dict[str, int]:
    values: dict[str, int] = {}
    value = 10
    for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        if value % 11 == 0:
            value += 1
        values[letter] = value
        value += 1
    return values


_LETTER_VALUES = _letter_values()


def container_check_digit(prefix: str) -> int:
    """Compute the ISO 6346 check digit for the first ten characters.

    Args:
        prefix: Owner code, category letter and serial, e.g. ``"BWFU123456"``.

    Returns:
        The check digit (0-9).

    Raises:
        IdentifierError: ``TM-0101`` if the prefix is not 4 letters + 6 digits.

    Examples:
        >>> container_check_digit("BWFU123456")
        5
    """
    prefix = prefix.strip().upper()
    if not re.fullmatch(r"[A-Z]{4}\d{6}", prefix):
        raise IdentifierError(f"bad container prefix {prefix!r}", code="TM-0101")
    total = 0
    for position, char in enumerate(prefix):
        value = _LETTER_VALUES[char] if char.isalpha() else int(char)
        total += value * (2**position)
    return total % 11 % 10


def validate_container_number(number: str) -> str:
    """Normalise and validate a container number.

    Spaces and dashes are removed and letters upper-cased before checking.

    Args:
        number: A container number such as ``"bwfu 123456-5"``.

    Returns:
        The normalised number (``"BWFU1234565"``).

    Raises:
        IdentifierError: ``TM-0101`` if the format or check digit is wrong.
    """
    cleaned = re.sub(r"[\s-]", "", number).upper()
    match = _CONTAINER_RE.match(cleaned)
    if not match:
        raise IdentifierError(
            f"container number {number!r} is not in ISO 6346 format",
            code="TM-0101",
            hint="expected 4 letters, 6 digits and a check digit, e.g. BWFU1234565",
        )
    expected = container_check_digit(cleaned[:10])
    if int(match.group(4)) != expected:
        raise IdentifierError(
            f"container number {cleaned} has check digit {match.group(4)}, expected {expected}",
            code="TM-0101",
        )
    return cleaned


def _check_letter(year: int, seq: int) -> str:
    digits = f"{year:04d}{seq:06d}"
    weights = (3, 7, 1)
    total = sum(int(d) * weights[i % 3] for i, d in enumerate(digits))
    return CHECK_LETTERS[total % 20]


@dataclass(frozen=True)
class ManifestRef:
    """Parsed form of a manifest id."""

    year: int
    seq: int

    def __str__(self) -> str:
        return manifest_id(self.year, self.seq)


def manifest_id(year: int, seq: int) -> str:
    """Build a manifest id ``BWF-YYYY-NNNNNN-C``.

    Args:
        year: Four-digit year (1970-9999).
        seq: Sequence number within the year (1-999999).

    Returns:
        The manifest id including its check letter.

    Raises:
        IdentifierError: ``TM-0102`` if ``year`` or ``seq`` is out of range.

    Examples:
        >>> manifest_id(2024, 123)
        'BWF-2024-000123-X'
    """
    if not 1970 <= year <= 9999 or not 1 <= seq <= 999_999:
        raise IdentifierError(f"year/seq out of range: {year}/{seq}", code="TM-0102")
    return f"BWF-{year:04d}-{seq:06d}-{_check_letter(year, seq)}"


def parse_manifest_id(text: str) -> ManifestRef:
    """Parse and verify a manifest id.

    Raises:
        IdentifierError: ``TM-0102`` if the id is malformed or the check
            letter does not match.
    """
    match = _MANIFEST_RE.match(text.strip().upper())
    if not match:
        raise IdentifierError(f"malformed manifest id {text!r}", code="TM-0102")
    year, seq, letter = int(match.group(1)), int(match.group(2)), match.group(3)
    if seq == 0 or _check_letter(year, seq) != letter:
        raise IdentifierError(f"manifest id {text!r} fails its check letter", code="TM-0102")
    return ManifestRef(year, seq)


class IdSequence:
    """Thread-safe generator of consecutive manifest ids.

    Args:
        year: Year embedded in the ids; defaults to the current year.
        start: First sequence number handed out (default ``1``).

    Examples:
        >>> seq = IdSequence(year=2024, start=41)
        >>> seq.next_id()
        'BWF-2024-000041-K'
    """

    def __init__(self, year: int | None = None, start: int = 1) -> None:
        self.year = year if year is not None else date.today().year
        self._next = start
        self._lock = threading.Lock()

    def next_id(self) -> str:
        """Return the next manifest id and advance the sequence."""
        with self._lock:
            seq = self._next
            self._next += 1
        return manifest_id(self.year, seq)

    @property
    def peek(self) -> int:
        """The sequence number the next call will use."""
        return self._next


def validate_seal(seal: str, *, strict: bool = True) -> str:
    """Validate a container seal number.

    Args:
        seal: The seal number printed on the bolt seal.
        strict: If ``True`` (the default, and config key
            ``manifest.strict_seals``) only Brackwater seals ``BW#######``
            are accepted. If ``False`` any 6-12 character alphanumeric seal
            is accepted.

    Returns:
        The upper-cased seal number.

    Raises:
        IdentifierError: ``TM-0103`` if the seal does not match.
    """
    cleaned = seal.strip().upper()
    pattern = _STRICT_SEAL_RE if strict else _LENIENT_SEAL_RE
    if not pattern.match(cleaned):
        mode = "strict" if strict else "lenient"
        raise IdentifierError(
            f"seal {seal!r} rejected in {mode} mode",
            code="TM-0103",
            hint="Brackwater seals look like BW0042117; set manifest.strict_seals=false for third-party seals",
        )
    return cleaned
