"""Workers claiming queued runs on both databases: every run goes to exactly one worker, and a
stopping worker lets its run finish (or hands it back) — what the sidecar's workers rely on."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from engine.workflows import runs, store, worker
from tests.factories import owner


@pytest.fixture
def ws(database, data_dir):
    return owner()


def test_workers_claiming_together_each_get_different_runs(ws):
    wf = store.create(ws, "name: c\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    queued = {runs.trigger(ws, wf.id).id for _ in range(24)}
    got: list[int] = []
    lock, start = threading.Lock(), threading.Barrier(4)

    def claimer(name: str) -> None:
        start.wait()
        while (run_id := worker.claim(name)) is not None:
            with lock:
                got.append(run_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(got) == Counter(queued)  # each once, none left behind
    assert worker.claim("late") is None


def test_a_claim_of_one_named_run_takes_only_that_run(ws):
    wf = store.create(ws, "name: one\nnodes:\n  - {id: a, type: transform, params: {value: 1}}\n")
    first, second = runs.trigger(ws, wf.id), runs.trigger(ws, wf.id)
    assert worker.claim("w", run_id=second.id) == second.id
    assert worker.claim("w", run_id=second.id) is None
    assert worker.claim("w") == first.id


def test_stop_ends_claiming_but_the_run_in_progress_finishes_and_hand_back_requeues(ws):
    wf = store.create(ws, "name: slow\nnodes:\n  - {id: wait, type: delay, params: {seconds: 1}}\n"
                          "  - {id: b, type: transform, needs: [wait], params: {value: 2}}\n")
    first, second = runs.trigger(ws, wf.id), runs.trigger(ws, wf.id)
    stop, hand_back = threading.Event(), threading.Event()
    stop.set()  # set before the run even starts: work_once claims nothing
    assert worker.work_once("w", stop=stop, hand_back=hand_back) == 0

    stop.clear()
    run_id = worker.claim("w")
    stop.set()  # "stop claiming" while the run is in progress: it still finishes
    assert worker.execute(run_id, "w", stop=hand_back) == "succeeded"

    other = worker.claim("w2")
    hand_back.set()  # "hand it back": the run goes back to the queue for the next worker
    assert worker.execute(other, "w2", stop=hand_back) == "queued"
    assert {runs.get_run(ws, first.id).status, runs.get_run(ws, second.id).status} == {"succeeded", "queued"}
    assert worker.claim("next") == other
