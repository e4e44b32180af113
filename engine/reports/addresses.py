"""Checking email addresses that people type: one plain ``local@domain`` each, nothing that could add a header."""

from __future__ import annotations

import re
from collections.abc import Iterable

from engine.errors import InvalidInput

ADDRESS_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
MAX_RECIPIENTS = 50


def check_address(value: str, what: str = "The address") -> str:
    address = (value or "").strip()
    if len(address) > 320 or not ADDRESS_RE.fullmatch(address):
        raise InvalidInput(f"{what} {address!r} is not an email address like ann@example.com.")
    return address


def parse_addresses(values: str | Iterable[str]) -> list[str]:
    """Addresses from a list, or from text separated by commas, semicolons or new lines; duplicates dropped."""
    if isinstance(values, str):
        values = re.split(r"[,;\s]+", values)
    seen: dict[str, str] = {}
    for value in values:
        if value and value.strip():
            address = check_address(value)
            seen.setdefault(address.lower(), address)
    if len(seen) > MAX_RECIPIENTS:
        raise InvalidInput(f"A report goes to at most {MAX_RECIPIENTS} addresses; this one lists {len(seen)}.")
    return list(seen.values())
