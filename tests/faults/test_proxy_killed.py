"""`protoevents serve` SIGKILLed again and again under load from several recorder processes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.support.load import Load
from tests.support.long_variants import scaled
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess, serve
from tests.support.stored import assert_each_stored_once, row_count

KILLS = scaled(10, 40)
RECORDERS = scaled(3, 6)
RATE = scaled(1500, 3000)  # events per second, per recorder


@pytest.mark.timeout(scaled(300, 1800))
def test_proxy_sigkilled_under_load_stores_each_recorded_event_once(
    database_url: str, tmp_path: Path, processes: list[ServeProcess], loads: list[Load]
) -> None:
    data = tmp_path / "data"
    proxy = serve(processes, data, database_url, "--fsync", "batch")
    port = int(proxy.address.rsplit(":", 1)[1])
    load = Load(proxy.address, tmp_path / "spool", RECORDERS, RATE)
    loads.append(load)
    for kill in range(KILLS):
        if kill % 2 == 0:
            # This proxy acknowledged batches and its writer stored some: kill it mid-stream.
            stored = row_count(database_url)
            poll(lambda s=stored: row_count(database_url) > s, 60, "the proxy to store events")
        # Odd kills come as soon as the proxy listens: while it replays its log to the
        # writer and the recorders replay their spools.
        assert proxy.stop(signal.SIGKILL) == -signal.SIGKILL
        proxy = serve(processes, data, database_url, "--fsync", "batch", port=port)

    outcome = load.finish()
    # The writer may be far behind the log (it holds what was acknowledged): let it catch up.
    recorded = len(set(outcome.ids))
    poll(lambda: row_count(database_url) >= recorded, scaled(120, 900), "the writer to catch up")
    assert proxy.stop(signal.SIGTERM) == 0
    for report in outcome.reports:
        assert report["drained"], report
        assert report["stats"]["dropped"] == {}, report
        assert report["stats"]["rejected"] == {}, report
    assert len(outcome.ids) > KILLS * 100
    assert_each_stored_once(database_url, outcome.ids)
