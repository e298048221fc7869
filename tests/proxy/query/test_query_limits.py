"""Query limits on both backends: a query past its time is cut by the database itself, few
unindexed queries run at once and never hold up indexed ones."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.engine import Engine

from protoevents.proxy.query.filters import EventQuery
from protoevents.proxy.query.limits import QueryLimits
from protoevents.proxy.query.store import EventStore
from protoevents.proxy.statuses import DeadlineExceededError, TooManyQueriesError
from tests.support.polling import poll
from tests.support.query_events import fill

SCAN = EventQuery(message_contains="appears in no message")


def test_a_query_past_its_time_is_cut_by_the_database(migrated_engine: Engine) -> None:
    engine, first = migrated_engine, fill(migrated_engine, 16)  # 65,536 events
    store = EventStore(engine, QueryLimits(timeout_s=0.002))
    with pytest.raises(DeadlineExceededError) as cut:
        store.list_events(SCAN, budget=store.limits.budget(None))
    assert str(cut.value).startswith("the query did not finish within 0.002 s (query_timeout_s")
    # The caller's deadline wins when shorter; the connection is fine for the next query.
    patient = EventStore(engine, QueryLimits(timeout_s=60))
    with pytest.raises(DeadlineExceededError, match=r"within 0\.001 s"):
        patient.list_events(SCAN, budget=patient.limits.budget(0.001))
    found = patient.get_event(first, patient.limits.budget(None))
    assert found is not None and found.message == "leader elected"
    assert patient.list_events(SCAN, budget=patient.limits.budget(None)) == ([], False)
    with pytest.raises(DeadlineExceededError, match=r"within 0 s"):
        patient.limits.budget(-1.0)  # a caller whose deadline passed while it waited


def test_unindexed_queries_wait_for_few_slots_and_never_hold_up_indexed_ones(
    migrated_engine: Engine,
) -> None:
    engine, first = migrated_engine, fill(migrated_engine, 6)
    limits = QueryLimits(timeout_s=60, scan_slots=1, max_waiting=2)
    store = EventStore(engine, limits)
    inside, leave = threading.Event(), threading.Event()

    def hold_the_slot() -> None:
        with limits.scan(limits.budget(None)):
            inside.set()
            leave.wait(60)

    holder = threading.Thread(target=hold_the_slot)
    holder.start()
    try:
        assert inside.wait(60)
        waited: list[BaseException] = []

        def wait_briefly() -> None:
            try:
                store.list_events(SCAN, budget=limits.budget(1.0))
            except DeadlineExceededError as exc:
                waited.append(exc)

        waiter = threading.Thread(target=wait_briefly)
        waiter.start()
        poll(lambda: limits.admitted == 2, 30, "the second query to wait for the slot")
        # One running, one waiting: a third unindexed query is refused at once...
        with pytest.raises(TooManyQueriesError) as refused, limits.scan(limits.budget(None)):
            pass
        assert "query_scan_slots = 1 run at once" in str(refused.value)
        # ... while indexed queries run beside them.
        found = store.get_event(first, limits.budget(None))
        assert found is not None
        page, more = store.list_events(
            EventQuery(types=frozenset([found.type])), limit=5, budget=limits.budget(None)
        )
        assert len(page) == 5 and more
        waiter.join(60)
        assert len(waited) == 1 and "within 1 s" in str(waited[0])
    finally:
        leave.set()
        holder.join(60)
    assert store.list_events(SCAN, budget=limits.budget(None)) == ([], False)
