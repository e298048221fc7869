"""Site -> central forwarding under faults, with real `serve` processes on loopback: central
down for a minute, site and central SIGKILLed under load, two sites into one central and a
chain site -> region -> central. Each test ends on the promise: central holds exactly the
events its sites hold, each once, with the same counts, each carrying the site it came
through (in central's `events.site` column and its JSON lines file)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.forwarding import Repeats, differences, forward_config, jsonl_sites
from tests.support.load import Load, Outcome
from tests.support.long_variants import scaled
from tests.support.polling import poll
from tests.support.serve_process import ServeProcess, serve
from tests.support.services import DatabaseFactory
from tests.support.stored import row_count, stored_counts, stored_sites

# A writer failing for a minute would otherwise wait up to 30 s between retries.
RETRY = ("--writer-retry-max-s", "1")
CATCH_UP_S = scaled(120, 900)


def port_of(proxy: ServeProcess) -> int:
    return int(proxy.address.rsplit(":", 1)[1])


def start_central(
    processes: list[ServeProcess], data: Path, url: str, port: int = 0
) -> ServeProcess:
    """A central proxy: it only stores (PostgreSQL) what its sites forward."""
    return serve(processes, data, url, *RETRY, port=port, follow_log=True)


def start_site(
    processes: list[ServeProcess], data: Path, site: str, upstream: str, port: int = 0
) -> ServeProcess:
    """A proxy storing into its own SQLite file (`site_url(data)`) and forwarding for `site`
    to `upstream`."""
    data.mkdir(exist_ok=True)
    config = forward_config(data.parent / f"{data.name}.toml", upstream, site)
    return serve(
        processes, data, site_url(data), "--config", str(config), *RETRY, port=port, follow_log=True
    )


def site_url(data: Path) -> str:
    return f"sqlite:///{data}/events.db"


def counts_or_none(url: str) -> dict[str, int] | None:
    """`stored_counts`, or None while the database cannot be read (SQLite locked, or the
    PostgreSQL database not made yet)."""
    try:
        return stored_counts(url)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError):
        return None


def wait_forwarded(central_url: str, site_urls: list[str], total: int) -> None:
    """Wait until the sites hold `total` events and central holds exactly theirs, with the
    same counts (the forward writers caught up); fail saying what differs."""
    state: dict[str, dict[str, int] | None] = {"want": None, "got": None}

    def caught_up() -> bool:
        want: dict[str, int] = {}
        for url in site_urls:
            counts = counts_or_none(url)
            if counts is None:
                return False
            want |= counts
        state["want"], state["got"] = want, counts_or_none(central_url)
        return len(want) >= total and state["got"] == want

    try:
        poll(caught_up, CATCH_UP_S, "central to hold what its sites hold", every=0.5)
    except AssertionError as exc:
        want, got = state["want"] or {}, state["got"] or {}
        raise AssertionError(
            f"{exc}: sites hold {len(want)} of {total}; central: {differences(want, got)}"
        ) from None


def assert_recorded(outcome: Outcome) -> dict[str, int]:
    """Every recorder drained, dropping and rejecting nothing; the count each of its events
    should be stored with (1: their messages differ)."""
    for report in outcome.reports:
        assert report["drained"], report
        assert report["stats"]["dropped"] == {}, report
        assert report["stats"]["rejected"] == {}, report
    return dict.fromkeys(outcome.ids, 1)


def assert_holds(url: str, expected: dict[str, int], what: str) -> None:
    """The database at `url` holds exactly `expected`: these ids, each once, these counts."""
    stored = stored_counts(url)
    assert stored == expected, f"{what}: {differences(expected, stored)}"


def assert_promise(
    central: ServeProcess, central_url: str, origins: dict[str, dict[str, int]]
) -> None:
    """Central holds exactly the events that came through each site (site: ids and counts),
    each once, with their counts, and each carries its site. Central is stopped (SIGTERM:
    its writers flushed) before its JSON lines are read."""
    union: dict[str, int] = {}
    origin: dict[str, str] = {}
    for name, events in origins.items():
        assert not set(events) & set(union), f"site {name} shares event ids with another"
        union |= events
        origin |= dict.fromkeys(events, name)
    assert_holds(central_url, union, "central")
    assert central.stop(signal.SIGTERM) == 0, central.log()[-3000:]
    carried = jsonl_sites(central.jsonl)
    wrong = {i: s for i, s in carried.items() if s != {origin.get(i)}}
    assert (len(carried), list(wrong.items())[:5]) == (len(origin), []), "sites at central"
    stored_at = stored_sites(central_url)
    misplaced = {i: s for i, s in stored_at.items() if s != origin.get(i)}
    assert list(misplaced.items())[:5] == [], "sites in central's events table"


def grown(url: str) -> Callable[[], bool]:
    """Whether the database at `url` holds more events than now."""
    stored = row_count(url)
    return lambda: row_count(url) > stored


def record_until(
    condition: Callable[[], bool],
    repeats: list[tuple[Repeats, ServeProcess]],
    what: str,
    timeout: float = 60,
) -> None:
    """Record a round of repeats through each proxy, then wait for `condition`."""
    for made, proxy in repeats:
        made.record(proxy.stub, 5)
    poll(condition, timeout, what, every=0.1)


# -- 1. central down for a minute -----------------------------------------------------------

DOWN_S = 60.0
RESUME_S = 5.0  # from central listening again to events stored there
RECORDERS_1 = scaled(2, 4)
RATE_1 = scaled(400, 2000)  # events per second, per recorder


@pytest.mark.timeout(scaled(400, 900))
def test_central_down_for_a_minute_while_the_site_records(
    postgres_database: DatabaseFactory,
    tmp_path: Path,
    processes: list[ServeProcess],
    loads: list[Load],
) -> None:
    central_url = postgres_database()
    central = start_central(processes, tmp_path / "central", central_url)
    port = port_of(central)
    site = start_site(processes, tmp_path / "site-a", "site-a", central.address)
    load = Load(site.address, tmp_path / "spool", RECORDERS_1, RATE_1)
    loads.append(load)
    repeats = Repeats()
    record_until(lambda: row_count(central_url) > 1000, [(repeats, site)], "forwarding")

    assert central.stop(signal.SIGTERM) == 0, central.log()[-3000:]
    back_at = time.monotonic() + DOWN_S
    # The site goes on acknowledging new events and repeats (updates) the while.
    while (left := back_at - time.monotonic()) > 0:
        repeats.record(site.stub, 5)
        time.sleep(min(left, 10.0))  # the outage lasts DOWN_S: the scenario, not a wait
    central = start_central(processes, tmp_path / "central", central_url, port=port)
    # The site's next retry comes within writer_retry_max_s (1 s), its stream at once: not
    # after a reconnect backoff of the channel's own, grown through the outage.
    record_until(grown(central_url), [(repeats, site)], "forwarding again", timeout=RESUME_S)

    expected = assert_recorded(load.finish()) | repeats.expected
    wait_forwarded(central_url, [site_url(tmp_path / "site-a")], len(expected))
    assert site.stop(signal.SIGTERM) == 0, site.log()[-3000:]
    assert_holds(site_url(tmp_path / "site-a"), expected, "site-a")
    assert_promise(central, central_url, {"site-a": expected})


# -- 2. the site, then central, SIGKILLed under load ---------------------------------------

KILLS = scaled(10, 40)
RECORDERS_2 = scaled(2, 4)
RATE_2 = scaled(1000, 1500)


@pytest.mark.timeout(scaled(400, 2400))
def test_site_then_central_sigkilled_under_load(
    postgres_database: DatabaseFactory,
    tmp_path: Path,
    processes: list[ServeProcess],
    loads: list[Load],
) -> None:
    central_url = postgres_database()
    central_data, site_data = tmp_path / "central", tmp_path / "site-a"
    central = start_central(processes, central_data, central_url)
    site = start_site(processes, site_data, "site-a", central.address)
    central_port, site_port = port_of(central), port_of(site)
    load = Load(site.address, tmp_path / "spool", RECORDERS_2, RATE_2)
    loads.append(load)
    repeats = Repeats()

    for kill in range(KILLS):
        if kill % 2 == 0:
            # Central stored some of what this site forwarded: kill the site mid-stream.
            record_until(grown(central_url), [(repeats, site)], "forwarding")
        # Odd kills as soon as it listens: while it replays its log to its writers.
        assert site.stop(signal.SIGKILL) == -signal.SIGKILL
        site = start_site(processes, site_data, "site-a", central.address, port=site_port)

    for kill in range(KILLS):
        if kill % 2 == 0:
            record_until(grown(central_url), [(repeats, site)], "forwarding")
        # Odd kills as soon as it listens: while the site's stream opens again.
        assert central.stop(signal.SIGKILL) == -signal.SIGKILL
        central = start_central(processes, central_data, central_url, port=central_port)

    expected = assert_recorded(load.finish()) | repeats.expected
    assert len(expected) > 2 * KILLS * 100
    wait_forwarded(central_url, [site_url(site_data)], len(expected))
    assert site.stop(signal.SIGTERM) == 0, site.log()[-3000:]
    assert_holds(site_url(site_data), expected, "site-a")
    assert_promise(central, central_url, {"site-a": expected})


# -- 3. two sites into one central, and a chain site -> region -> central ------------------

RATE_3 = scaled(500, 2000)
STORED_3 = scaled(3000, 30000)  # events central holds before the load ends


@pytest.mark.timeout(scaled(300, 900))
def test_two_sites_into_one_central(
    postgres_database: DatabaseFactory,
    tmp_path: Path,
    processes: list[ServeProcess],
    loads: list[Load],
) -> None:
    central_url = postgres_database()
    central = start_central(processes, tmp_path / "central", central_url)
    names = ("site-a", "site-b")
    sites = {n: start_site(processes, tmp_path / n, n, central.address) for n in names}
    made = {n: Repeats() for n in names}
    runs = {n: Load(p.address, tmp_path / f"spool-{n}", 1, RATE_3) for n, p in sites.items()}
    loads.extend(runs.values())
    record_until(
        lambda: row_count(central_url) > STORED_3,
        [(made[n], sites[n]) for n in names],
        "both sites' events at central",
    )

    expected = {n: assert_recorded(runs[n].finish()) | made[n].expected for n in names}
    urls = {n: site_url(tmp_path / n) for n in names}
    wait_forwarded(central_url, list(urls.values()), sum(len(e) for e in expected.values()))
    for name, proxy in sites.items():
        assert proxy.stop(signal.SIGTERM) == 0, proxy.log()[-3000:]
        assert_holds(urls[name], expected[name], name)
    assert_promise(central, central_url, expected)


@pytest.mark.timeout(scaled(300, 900))
def test_chain_site_region_central_keeps_the_first_site(
    postgres_database: DatabaseFactory,
    tmp_path: Path,
    processes: list[ServeProcess],
    loads: list[Load],
) -> None:
    central_url = postgres_database()
    central = start_central(processes, tmp_path / "central", central_url)
    region = start_site(processes, tmp_path / "region-1", "region-1", central.address)
    site = start_site(processes, tmp_path / "site-a", "site-a", region.address)
    load = Load(site.address, tmp_path / "spool", 1, RATE_3)
    loads.append(load)
    # The region records events of its own too: they come to central as region-1's.
    from_site, from_region = Repeats(), Repeats()
    record_until(
        lambda: row_count(central_url) > STORED_3,
        [(from_site, site), (from_region, region)],
        "the site's events at central through the region",
    )

    expected = assert_recorded(load.finish()) | from_site.expected
    site_db, region_db = site_url(tmp_path / "site-a"), site_url(tmp_path / "region-1")
    total = len(expected) + len(from_region.expected)
    wait_forwarded(central_url, [site_db, region_db], total)
    assert site.stop(signal.SIGTERM) == 0, site.log()[-3000:]
    assert_holds(site_db, expected, "site-a")
    # The region stores what it forwards, the site's events and its own.
    assert region.stop(signal.SIGTERM) == 0, region.log()[-3000:]
    assert_holds(region_db, expected | from_region.expected, "region-1")
    # There the site's events carry its site, the region's own none.
    at_region = {**dict.fromkeys(expected, "site-a"), **dict.fromkeys(from_region.expected, "")}
    assert stored_sites(region_db) == at_region
    region_sites = jsonl_sites(region.jsonl)
    wrong = {i: region_sites.get(i) for i in expected if region_sites.get(i) != {"site-a"}}
    assert list(wrong.items())[:5] == [], "sites at the region"
    assert_promise(central, central_url, {"site-a": expected, "region-1": from_region.expected})
