"""Prometheus metrics of the proxy, in a registry of their own (one per proxy instance).

Names follow Prometheus' conventions: the exposition adds `_total` to every counter's name
(`protoevents_events_received` is scraped as `protoevents_events_received_total`), and a
unit, when there is one, ends the name (`_bytes`). README.md lists them all."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    """Counters updated once per batch (never per event) to stay off the hot path."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._events(self.registry)
        self._log(self.registry)
        self._writers(self.registry)
        self._quarantine(self.registry)
        self._calls(self.registry)
        self._watch(self.registry)
        self._access(self.registry)
        self._tls(self.registry)

    def _events(self, r: CollectorRegistry) -> None:
        """What became of the events received."""
        self.received = Counter("protoevents_events_received", "Events received", registry=r)
        self.accepted = Counter(
            "protoevents_events_accepted", "Events accepted and persisted", registry=r
        )
        self.rejected = Counter(
            "protoevents_events_rejected", "Events rejected", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "protoevents_events_duplicates", "Events whose id was already accepted", registry=r
        )
        self.dedup_merges = Counter(
            "protoevents_dedup_merges", "Events merged into an earlier one by dedup", registry=r
        )

    def _log(self, r: CollectorRegistry) -> None:
        """The write-ahead log."""
        self.wal_bytes = Counter(
            "protoevents_wal_written_bytes", "Bytes appended to the write-ahead log", registry=r
        )
        self.wal_fsyncs = Counter(
            "protoevents_wal_fsyncs", "fsyncs of the write-ahead log", registry=r
        )
        self.wal_full = Counter(
            "protoevents_wal_full_batches",
            "Batches refused because the log was full",
            registry=r,
        )
        self.wal_corrupt_bytes = Counter(
            "protoevents_wal_corrupt_bytes",
            "Damaged bytes found in the write-ahead log (skipped, copied to wal/damaged/)",
            registry=r,
        )
        self.wal_unavailable = Gauge(
            "protoevents_wal_unavailable",
            "1 while the write-ahead log cannot write (a write error it retries)",
            registry=r,
        )

    def _writers(self, r: CollectorRegistry) -> None:
        """The writers and their feeds."""
        self.written = Counter(
            "protoevents_writer_written_changes", "Changes written", ["writer"], registry=r
        )
        self.write_failures = Counter(
            "protoevents_writer_failed_batches", "Failed writer batches", ["writer"], registry=r
        )
        self.writer_lag = Gauge(
            "protoevents_writer_lag_bytes",
            "Bytes of log between the end and the writer's bookmark",
            ["writer"],
            registry=r,
        )
        self.writer_lag_changes = Gauge(
            "protoevents_writer_lag_changes",
            "Changes (new events and updates) in the log after the writer's bookmark",
            ["writer"],
            registry=r,
        )
        self.writer_oldest_age = Gauge(
            "protoevents_writer_oldest_unwritten_age_seconds",
            "Seconds since the oldest change the writer has still to write was appended",
            ["writer"],
            registry=r,
        )
        self.set_aside = Counter(
            "protoevents_writer_set_aside_changes",
            "Changes a writer refused for good, set aside for it",
            ["writer"],
            registry=r,
        )
        self.feed_restarts = Counter(
            "protoevents_writer_feed_restarts",
            "Times a writer's feed failed and was started again",
            ["writer"],
            registry=r,
        )

    def _quarantine(self, r: CollectorRegistry) -> None:
        """Events of types the proxy does not know."""
        self.quarantined = Counter(
            "protoevents_events_quarantined",
            "Events of types the proxy does not know, quarantined",
            ["type"],
            registry=r,
        )
        self.quarantine_released = Counter(
            "protoevents_quarantine_released_events",
            "Quarantined events handed back to ingest once their type was known",
            registry=r,
        )
        self.quarantine_events = Gauge(
            "protoevents_quarantine_events", "Events held in quarantine", registry=r
        )
        self.forwarded = Counter(
            "protoevents_forwarded_changes",
            "Changes received forwarded from another proxy (a site) and logged",
            registry=r,
        )

    def _calls(self, r: CollectorRegistry) -> None:
        """Ingest and query calls: limits and timeouts."""
        self.ingest_streams = Gauge(
            "protoevents_ingest_streams", "Ingest calls (Record, RecordBatch) open", registry=r
        )
        self.ingest_refused = Counter(
            "protoevents_ingest_calls_refused",
            "Ingest calls refused over max_ingest_streams or max_streams_per_client",
            registry=r,
        )
        self.idle_streams_closed = Counter(
            "protoevents_idle_streams_closed",
            "Record streams ended after idle_stream_timeout_s without a batch",
            registry=r,
        )
        self.query_timeouts = Counter(
            "protoevents_query_timeouts",
            "Queries cut at query_timeout_s or the caller's deadline",
            registry=r,
        )
        self.queries_refused = Counter(
            "protoevents_queries_refused",
            "Queries refused because too many unindexed queries were waiting",
            registry=r,
        )

    def _watch(self, r: CollectorRegistry) -> None:
        """WatchEvents and the Redis relay between proxies."""
        self.watchers = Gauge("protoevents_watchers", "WatchEvents streams open", registry=r)
        self.relay_forged = Counter(
            "protoevents_relay_forged",
            "Messages on the Redis relay channel dropped for a missing or wrong signature",
            ["reason"],
            registry=r,
        )
        for reason in ("unsigned", "bad_signature"):  # scraped as 0 before the first
            self.relay_forged.labels(reason)

    def _access(self, r: CollectorRegistry) -> None:
        """Calls and events the access file refused."""
        self.denials = Counter(
            "protoevents_denials",
            "Calls refused for their credentials or roles, and events for their source",
            ["reason"],
            registry=r,
        )
        self.access_reload_failures = Counter(
            "protoevents_access_reload_failures",
            "Reloads of the access file refused as bad (the last good one stays)",
            registry=r,
        )

    def _tls(self, r: CollectorRegistry) -> None:
        """The certificate of the gRPC port (a sample only while TLS is on)."""
        self.tls_certificate_expiry = Gauge(
            "protoevents_tls_certificate_expiry_seconds",
            "Seconds until the TLS certificate served expires (negative once it has)",
            ["file"],
            registry=r,
        )
