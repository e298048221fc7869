"""Every metric the proxy exposes follows Prometheus' naming conventions and is the README's
table row by row: its name as scraped, its type and its labels."""

from __future__ import annotations

import re

from prometheus_client import Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from protoevents.proxy.metrics import Metrics
from tests.support.paths import ROOT

ROW = re.compile(r"^\| `(protoevents_[a-z_]+)` \| (counter|gauge) \|([^|]*)\|", re.MULTILINE)


def exposed() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Name as scraped -> (type, label names), from the metrics of a fresh proxy."""
    metrics = Metrics()
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge):
            kind = "counter" if isinstance(metric, Counter) else "gauge"
            name = metric._name + ("_total" if kind == "counter" else "")  # the name scraped
            found[name] = (kind, tuple(metric._labelnames))
    return found


def test_counters_end_in_total_and_units_end_the_name() -> None:
    metrics = Metrics()
    metrics.rejected.labels("REJECTION_REASON_MISSING_SOURCE").inc()
    text = generate_latest(metrics.registry).decode()
    # The text format shows each counter's `_created` sample as a gauge family of its own.
    families = [f for f in text_string_to_metric_families(text) if not f.name.endswith("_created")]
    for family in families:
        assert family.name.startswith("protoevents_"), family.name
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            else:
                assert not sample.name.endswith("_total"), sample.name
        words = family.name.split("_")
        for unit in ("bytes", "seconds"):
            assert unit not in words or words[-1] == unit, family.name
    assert set(exposed()) == {f.name + ("_total" if f.type == "counter" else "") for f in families}


def test_the_readme_table_lists_every_metric_with_its_type_and_labels() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = {
        name: (kind, tuple(re.findall(r"^`([a-z_]+)`", labels.strip())))
        for name, kind, labels in ROW.findall(readme)
    }
    assert rows == exposed()
