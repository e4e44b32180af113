"""Column types that keep money exact and time in UTC on every database.

``Money`` is ``NUMERIC(20, 10)`` on PostgreSQL. SQLite has no exact decimal type (it would
store a float), so there the same column holds an integer count of 1e-10 USD: sums in SQL
stay exact and every value read back is a ``Decimal``. ``ExactDecimal`` does the same for
other exact quantities (media seconds).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy import BigInteger, DateTime, Numeric
from sqlalchemy.types import TypeDecorator

MONEY_PLACES = 10
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
_SCALE = 10**MONEY_PLACES


def to_money(value: Decimal | int | str) -> Decimal:
    """Quantize to the stored precision (1e-10 USD), rounding half to even."""
    return Decimal(value).quantize(MONEY_QUANTUM, rounding=ROUND_HALF_EVEN)


class ExactDecimal(TypeDecorator):
    """A ``Decimal`` with a fixed number of places, exact on PostgreSQL and on SQLite."""

    impl = Numeric(20, MONEY_PLACES)
    cache_ok = True

    def __init__(self, places: int = MONEY_PLACES):
        super().__init__()
        self.places = places
        self.quantum = Decimal(1).scaleb(-places)

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, self.places, asdecimal=True))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, float):
            raise TypeError("exact amounts must be Decimal, never float")
        value = Decimal(value).quantize(self.quantum, rounding=ROUND_HALF_EVEN)
        if dialect.name == "sqlite":
            return int(value.scaleb(self.places))
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "sqlite":
            return Decimal(int(value)).scaleb(-self.places).quantize(self.quantum)
        return Decimal(value).quantize(self.quantum)

    @property
    def python_type(self):
        return Decimal

    def __repr__(self) -> str:  # what Alembic writes into migrations
        return f"{type(self).__name__}({self.places})"


class Money(ExactDecimal):
    """USD with 10 places: fine enough for a single token of the cheapest model."""

    cache_ok = True

    def __init__(self):
        super().__init__(MONEY_PLACES)

    def __repr__(self) -> str:
        return "Money()"


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out (SQLite keeps them naive on disk)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("datetimes stored by Meterbook must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def python_type(self):
        return datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
