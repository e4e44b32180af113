"""The scheduler lease on both databases: one holder, renewals, takeover after it lapses, fencing."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from engine import db
from engine.dbtypes import utcnow
from engine.schedules.models import SidecarLease
from engine.sidecar.lease import Lease, NotLeader


def _row():
    with db.read_session() as s:
        return s.scalar(select(SidecarLease).where(SidecarLease.name == "scheduler"))


def _lapse() -> None:
    with db.transaction() as s:
        s.execute(update(SidecarLease).values(expires_at=utcnow() - timedelta(seconds=1)))


def test_one_holder_renews_and_another_takes_over_only_after_it_lapses(database):
    a, b = Lease("a", 30), Lease("b", 30)
    assert a.acquire() and a.held() and a.generation == 1
    assert not b.acquire() and not b.held()
    assert a.renew()
    assert _row().holder == "a" and _row().expires_at > utcnow() + timedelta(seconds=25)

    _lapse()  # a stopped renewing (paused, cut off)
    assert b.acquire() and b.generation == 2
    assert not a.renew() and not a.held()  # the old leader learns it lost, and stops
    assert _row().holder == "b"


def test_a_stale_leader_is_fenced_out_of_writing(database):
    a, b = Lease("a", 30), Lease("b", 30)
    a.acquire()
    with db.transaction() as s:
        a.fence(s)  # holds: no error
    _lapse()
    b.acquire()
    a._valid_until = float("inf")  # a believes it still leads (its clock says so)
    with pytest.raises(NotLeader), db.transaction() as s:
        a.fence(s)
    with db.transaction() as s:
        b.fence(s)


def test_a_lease_not_renewed_in_time_stops_its_holder_by_its_own_clock(database):
    a = Lease("a", 0.2)
    assert a.acquire()
    threading.Event().wait(0.3)
    assert not a.held()  # whatever the database says, a must stop scheduling now
    with pytest.raises(NotLeader), db.transaction() as s:
        a.fence(s)


def test_release_hands_over_at_once(database):
    a, b = Lease("a", 30), Lease("b", 30)
    a.acquire()
    a.release()
    assert not a.held()
    assert b.acquire() and b.generation == 2


@pytest.mark.parametrize("existing", [False, True])
def test_of_two_sidecars_acquiring_at_once_exactly_one_wins(database, existing):
    if existing:  # a lapsed row: the race is on the conditional UPDATE, not the first INSERT
        Lease("old", 30).acquire()
        _lapse()
    for round_ in range(5):
        leases = [Lease(f"s{round_}-{i}", 30) for i in range(2)]
        start, won = threading.Barrier(2), []

        def go(lease):
            start.wait()
            won.append(lease.acquire())

        threads = [threading.Thread(target=go, args=(lease,)) for lease in leases]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(won) == [False, True]
        assert _row().holder == next(lease.holder for lease in leases if lease.held())
        _lapse()
