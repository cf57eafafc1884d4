"""Weather reports: decoding, validation and canonical names. Pure: no I/O.

Decoding is msgspec's strict mode (no strings as numbers, no booleans as numbers, no NaN or
Infinity, no numbers out of the float range, no unknown fields). Range and name checks follow,
and every problem found is reported with the field it belongs to.

Names longer than `MAX_NAME_LENGTH` are refused before they are normalised: Unicode
normalisation can expand a character into eighteen, and 20,000 such characters took ~100 ms of
the event loop to normalise only to be refused.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

WEATHERS = ("sunny", "cloudy", "rainy", "foggy")

MAX_NAME_LENGTH = 64
"""Longest municipality or weather name considered (characters, as sent): longer is unknown."""

T = TypeVar("T")


class Report(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One weather report, as posted and as stored (names canonical)."""

    municipality: str
    temperature: float
    humidity: float
    weather: str


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of the request body."""

    field: str
    message: str


class InvalidReport(ValueError):  # noqa: N818 - named after what the caller gets, like msgspec
    """The body is not JSON, or not a valid report; `errors` says where and why."""

    def __init__(self, reason: str, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.reason = reason
        self.errors = errors


def canonical(name: str) -> str:
    """Case- and accent-insensitive form: `Amatitlán` -> `amatitlan`."""
    decomposed = unicodedata.normalize("NFKD", name)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


_KEY = re.compile(rb'"\s*:')


class Validator:
    """Decodes request bodies into reports for one configuration."""

    def __init__(
        self,
        municipalities: Iterable[str],
        weathers: Iterable[str] = WEATHERS,
        temperature: tuple[float, float] = (-90.0, 60.0),
        humidity: tuple[float, float] = (0.0, 100.0),
        max_batch: int = 500,
    ) -> None:
        self._municipalities = {canonical(m): canonical(m) for m in municipalities}
        self._weathers = {canonical(w): canonical(w) for w in weathers}
        self._temperature = temperature
        self._humidity = humidity
        self._max_batch = max_batch
        self._one = msgspec.json.Decoder(Report)
        self._many = msgspec.json.Decoder(list[Report])

    @property
    def municipalities(self) -> list[str]:
        """Accepted municipalities, canonical names."""
        return list(self._municipalities)

    def municipality(self, name: str) -> str | None:
        """The canonical name, or None when the municipality is not accepted."""
        return _lookup(self._municipalities, name)

    def weather(self, name: str) -> str | None:
        """The canonical weather, or None when it is not accepted."""
        return _lookup(self._weathers, name)

    def one(self, body: bytes) -> Report:
        """Decode and check one report."""
        report = self._decode(self._one, body)
        errors = self._check(report, "$")
        if errors:
            raise InvalidReport("invalid_report", errors)
        self._no_duplicate_keys(body, 4)
        return self._canonical(report)

    def many(self, body: bytes) -> list[Report]:
        """Decode and check a batch: all valid, or nothing."""
        reports = self._decode(self._many, body)
        if not 1 <= len(reports) <= self._max_batch:
            message = f"a batch holds 1 to {self._max_batch} reports, not {len(reports)}"
            raise InvalidReport("invalid_report", [FieldError("$", message)])
        errors = [e for i, r in enumerate(reports) for e in self._check(r, f"$[{i}]")]
        if errors:
            raise InvalidReport("invalid_report", errors)
        self._no_duplicate_keys(body, 4 * len(reports))
        return [self._canonical(r) for r in reports]

    @staticmethod
    def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
        try:
            return decoder.decode(body)
        except msgspec.ValidationError as exc:
            message, _, path = str(exc).partition(" - at `")
            raise InvalidReport("invalid_report", [FieldError(path.rstrip("`") or "$", message)]) from None
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            raise InvalidReport("invalid_json", [FieldError("$", f"not valid JSON: {exc}")]) from None

    @staticmethod
    def _no_duplicate_keys(body: bytes, expected: int) -> None:
        # msgspec keeps the last of duplicate keys. A body that passed validation has only the
        # four known keys per report and values free of quotes (names come from fixed lists),
        # so every `":` in it ends a key: more than four per report means a key was repeated.
        if len(_KEY.findall(body)) != expected:
            error = FieldError("$", "duplicate keys in a JSON object")
            raise InvalidReport("invalid_report", [error])

    def _check(self, report: Report, at: str) -> list[FieldError]:
        errors = []
        if self.municipality(report.municipality) is None:
            errors.append(_unknown(f"{at}.municipality", "municipality", report.municipality, self._municipalities))
        if self.weather(report.weather) is None:
            errors.append(_unknown(f"{at}.weather", "weather", report.weather, self._weathers))
        for name, value, (low, high) in (
            ("temperature", report.temperature, self._temperature),
            ("humidity", report.humidity, self._humidity),
        ):
            if not (math.isfinite(value) and low <= value <= high):
                errors.append(FieldError(f"{at}.{name}", f"must be a number from {low:g} to {high:g}"))
        return errors

    def _canonical(self, report: Report) -> Report:
        municipality = self.municipality(report.municipality)
        weather = self.weather(report.weather)
        if municipality == report.municipality and weather == report.weather:
            return report
        return Report(str(municipality), report.temperature, report.humidity, str(weather))


def _lookup(accepted: dict[str, str], name: str) -> str | None:
    """The canonical form of `name` if it is accepted; over-long names are not even normalised."""
    if len(name) > MAX_NAME_LENGTH:
        return None
    return accepted.get(name) or accepted.get(canonical(name))


def _unknown(field: str, kind: str, name: str, accepted: Iterable[str]) -> FieldError:
    if len(name) > MAX_NAME_LENGTH:
        return FieldError(field, f"unknown {kind}: longer than {MAX_NAME_LENGTH} characters")
    return FieldError(field, f"unknown {kind}; accepted: {', '.join(accepted)}")
