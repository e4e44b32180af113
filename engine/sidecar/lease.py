"""The scheduler lease: one row of ``sidecar_leases`` says which sidecar schedules.

Any number of sidecars run workers; only the holder of the lease fires schedules. A sidecar
takes the lease when nobody holds it or the holder's lease expired, with one conditional
UPDATE (or the first INSERT), so of two sidecars trying at once exactly one wins on SQLite and
PostgreSQL. The winner renews it every third of the lease time; each takeover adds one to
``generation``, the fencing token a firing checks in its own transaction (``fence``), so a
leader that was paused or cut off and then wakes up cannot write a firing after its successor
took over. A leader that cannot renew stops scheduling at once: ``held()`` is false from the
moment its last renewal would have expired, by its own monotonic clock, whatever the database says.

Expiry times are wall-clock UTC written by the holder and read by the others: sidecars on
several hosts need synchronised clocks (NTP), as any lease does.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from engine import db
from engine.dbtypes import utcnow
from engine.schedules.models import SidecarLease

log = logging.getLogger(__name__)

SCHEDULER = "scheduler"


class NotLeader(Exception):
    """This sidecar does not hold the scheduler lease (any more): it must not fire anything."""


class Lease:
    def __init__(self, holder: str, ttl_s: float, name: str = SCHEDULER):
        self.holder, self.ttl_s, self.name = holder, float(ttl_s), name
        self.generation: int | None = None
        self._valid_until = 0.0  # monotonic: when our last successful write runs out
        self._lock = threading.Lock()

    # --- state --------------------------------------------------------------------------------

    def held(self) -> bool:
        return self.generation is not None and time.monotonic() < self._valid_until

    @property
    def renew_every_s(self) -> float:
        return self.ttl_s / 3

    # --- the three writes ---------------------------------------------------------------------

    def acquire(self) -> bool:
        """Take the lease if it is free or lapsed (or ours already); True if we hold it now."""
        with self._lock:
            started = time.monotonic()
            now = utcnow()
            values = dict(holder=self.holder, acquired_at=now, renewed_at=now,
                          expires_at=now + timedelta(seconds=self.ttl_s))
            t = SidecarLease.__table__
            with db.transaction() as s:
                row = s.execute(update(t).where(
                    t.c.name == self.name, or_(t.c.expires_at < now, t.c.holder == self.holder, t.c.holder.is_(None))
                ).values(generation=t.c.generation + 1, **values).returning(t.c.generation)).first()
            if row is None:
                row = self._insert(values)
            if row is None:
                self.generation = None
                return False
            self.generation = int(row[0])
            self._valid_until = started + self.ttl_s
            log.info("%s holds the %s lease (generation %s)", self.holder, self.name, self.generation)
            return True

    def _insert(self, values: dict):
        t = SidecarLease.__table__
        try:
            # Read, then insert: on SQLite it must hold the write lock from the start, or a second
            # sidecar writing in between makes the insert fail at once with "database is locked".
            with db.write_transaction() as conn:
                if conn.scalar(select(t.c.name).where(t.c.name == self.name)) is not None:
                    return None  # someone holds it, and it has not lapsed
                conn.execute(insert(t).values(name=self.name, generation=1, **values))
                return (1,)
        except IntegrityError:  # the other sidecar inserted it first
            return None

    def renew(self) -> bool:
        """Extend our lease; False (and no longer leader) if it was taken over or cannot be written."""
        with self._lock:
            if self.generation is None:
                return False
            started = time.monotonic()
            now = utcnow()
            t = SidecarLease.__table__
            try:
                with db.transaction() as s:
                    got = s.execute(update(t).where(
                        t.c.name == self.name, t.c.holder == self.holder, t.c.generation == self.generation
                    ).values(renewed_at=now, expires_at=now + timedelta(seconds=self.ttl_s))).rowcount
            except OperationalError:
                log.warning("renewing the %s lease failed; retrying until it lapses", self.name, exc_info=True)
                return self.held()
            if not got:
                log.warning("%s lost the %s lease (generation %s) to another sidecar", self.holder, self.name,
                            self.generation)
                self.generation = None
                return False
            self._valid_until = started + self.ttl_s
            return True

    def release(self) -> None:
        """Give the lease up on a clean shutdown, so another sidecar takes over at once, not after it lapses."""
        with self._lock:
            if self.generation is None:
                return
            generation, self.generation = self.generation, None
            t = SidecarLease.__table__
            try:
                with db.transaction() as s:
                    s.execute(update(t).where(t.c.name == self.name, t.c.holder == self.holder,
                                              t.c.generation == generation).values(expires_at=utcnow()))
            except OperationalError:
                log.warning("could not release the %s lease; it lapses on its own", self.name, exc_info=True)

    # --- fencing ------------------------------------------------------------------------------

    def fence(self, s) -> None:
        """Inside a writing transaction: raise ``NotLeader`` unless our generation still holds the lease.

        On PostgreSQL the row is locked FOR SHARE, so a takeover waits for this transaction to
        end; SQLite's single writer gives the same order.
        """
        generation = self.generation
        if generation is None or not self.held():
            raise NotLeader(self.name)
        t = SidecarLease.__table__
        q = select(t.c.holder, t.c.generation).where(t.c.name == self.name)
        if s.get_bind().dialect.name != "sqlite":
            q = q.with_for_update(read=True)
        row = s.execute(q).first()
        if row is None or row.holder != self.holder or row.generation != generation:
            raise NotLeader(self.name)
