"""The benchmark suite runs (`python -m bench`), writes its JSON and judges targets right."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from bench.suite import Target
from tests.support.commands import run_python


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return run_python("-m", "bench", *args, timeout=180)


def test_a_slice_of_the_quick_suite_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = run_bench("--quick", "--runs", "1", "--only", "record_cost", "--json", str(out))
    assert done.returncode == 0, done.stderr
    assert "| scenario" in done.stdout
    assert "`Recorder.record()` on the caller's thread" in done.stdout
    results = json.loads(out.read_text())
    assert results["mode"] == "quick"
    assert list(results["scenarios"]) == ["record_cost"]
    rows = {row["measure"]: row for row in results["scenarios"]["record_cost"]["rows"]}
    record = rows["`Recorder.record()` on the caller's thread"]
    assert record["unit"] == "µs"
    assert 0 < record["value"] < 1000
    assert record["target"]["limit"] == 5.0
    assert record["verdict"].startswith(("met", "missed by"))
    assert rows["peer: `logging.info` to a NullHandler"]["value"] > 0


def test_the_dedup_memory_scenario_measures_keys_and_the_byte_bound(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = run_bench("--quick", "--runs", "1", "--only", "dedup_memory", "--json", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["scenarios"]["dedup_memory"]["rows"]
    small, large, stormed, rss = rows
    assert small["measure"].startswith("dedup memory per key, small events")
    assert 500 < small["value"] < 3000 and small["unit"] == "B"
    assert 60_000 < large["value"] < 65_000
    assert stormed["target"]["limit"] == 160.0
    assert 0.75 * 160 < stormed["value"] < 1.25 * 160, stormed["shown"]
    assert stormed["detail"]["evictions"] > 0
    assert stormed["detail"]["accounted_bytes"] <= 160 * 2**20
    assert rss["value"] > 0


def test_an_unknown_scenario_is_refused_with_the_known_names() -> None:
    done = run_bench("--only", "record_cost,nope")
    assert done.returncode == 2
    assert "unknown scenario 'nope'" in done.stderr
    assert "record_cost,delivery,e2e_sqlite" in done.stderr


def test_targets_say_met_or_missed_and_by_how_much() -> None:
    into_postgres = Target(100_000, at_least=True, unit="events/s", text=">= 100,000 events/s")
    assert into_postgres.verdict(38_200) == "missed by 2.62x (38.2% of the target)"
    assert into_postgres.verdict(125_000) == "met (1.25x the target)"
    assert into_postgres.verdict(99_600) == "missed by 1.00x (99.6% of the target)"
    record_cost = Target(5.0, at_least=False, unit="µs", text="<= 5 µs")
    assert record_cost.verdict(1.07) == "met (4.7x under)"
    assert record_cost.verdict(6.0) == "missed by 1.20x (1 µs over)"
    rss = Target(50.0, at_least=False, unit="MiB", text="< 50 MiB")
    assert rss.verdict(-2.0) == "met"
    assert rss.verdict(75.0) == "missed by 1.50x (25 MiB over)"


def test_compare_pools_the_runs_of_each_set_and_divides_after_by_before(tmp_path: Path) -> None:
    def result(events_per_s: list[float], proxy_us: list[float]) -> dict[str, object]:
        rows = [
            {"measure": "recorder -> `serve` -> committed, 10,000 events", "unit": "events/s",
             "value": events_per_s[0], "samples": events_per_s, "detail": {}},
            {"measure": "CPU per event: recorder / proxy / database", "unit": "µs",
             "value": 0, "samples": [], "detail": {"samples_us": [[7, p, 0] for p in proxy_us]}},
        ]  # fmt: skip
        return {"scenarios": {"e2e_sqlite": {"rows": rows}}}

    files = {}
    for name, figures in {
        "b1": ([100.0, 110.0], [30.0, 31.0]),
        "b2": ([120.0], [29.0]),
        "a1": ([200.0, 220.0], [20.0]),
        "a2": ([210.0], [22.0, 24.0]),
    }.items():
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps(result(*figures)))
    done = run_python(
        *("-m", "bench.compare", "--before", str(files["b1"]), str(files["b2"])),
        *("--after", str(files["a1"]), str(files["a2"])),
    )
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[2:]
    committed = "recorder -> `serve` -> committed (events/s)"
    assert f"| e2e_sqlite | {committed} | 110 | 210 | 1.91x |" in rows
    assert "| e2e_sqlite | CPU per event, proxy (µs) | 30.00 | 22.00 | 0.73x |" in rows


def test_the_mtls_scenario_measures_ingest_over_mtls_beside_plaintext(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = run_bench("--quick", "--runs", "1", "--only", "mtls", "--json", str(out))
    assert done.returncode == 0, done.stderr
    plaintext, mtls = json.loads(out.read_text())["scenarios"]["mtls"]["rows"]
    assert plaintext["measure"].startswith("ingest, one Record stream, plaintext")
    assert mtls["measure"] == "ingest, one Record stream, mTLS (client certificate required)"
    assert plaintext["value"] > 0 and mtls["value"] > 0
    assert mtls["ratio"] == f"{mtls['value'] / plaintext['value']:.2f}x of plaintext"


def test_the_forward_scenario_measures_forwarding_beside_the_sites_ingest(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = run_bench("--quick", "--runs", "1", "--only", "forward", "--json", str(out))
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["scenarios"]["forward"]["rows"]
    ingest, forwarding, down, catchup, cpu, lag, site_lag = rows
    assert ingest["measure"].startswith("site ingest: recorder -> site `serve` (SQLite)")
    assert all(row["value"] > 0 for row in (ingest, forwarding, down, catchup, cpu))
    ratio = forwarding["value"] / ingest["value"]
    assert forwarding["ratio"] == f"{ratio:.2f}x site ingest"
    assert catchup["detail"]["central_start_s"][0] > 0
    assert lag["unit"] == "ms" and 0 < site_lag["value"] < lag["value"] < 10_000
    assert 1_900 < lag["detail"]["rates"][0] < 2_100
