"""The OpenTelemetry Python SDK logs pipeline: BatchLogRecordProcessor + OTLP gRPC exporter.

Optional (`pip install -e '.[bench]'`): `available()` says whether it is installed. The far end
is `otlp_sink`, an OTLP LogsService that counts the records it receives, in its own process.
"""

from __future__ import annotations

import logging
import time
from concurrent import futures
from multiprocessing.connection import Connection
from typing import Any

from bench.peers.sink import Counter, add

MISSING = "not installed (pip install -e '.[bench]')"


def available() -> bool:
    try:
        import opentelemetry.exporter.otlp.proto.grpc._log_exporter
        import opentelemetry.sdk._logs  # noqa: F401
    except ImportError:
        return False
    return True


def otlp_sink(counter: Counter, conn: Connection) -> None:
    """Child process: an OTLP logs receiver on a loopback port that counts log records."""
    import grpc
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

    class CountingLogsService(logs_service_pb2_grpc.LogsServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (the RPC's name)
            add(
                counter,
                sum(
                    len(scope.log_records)
                    for resource in request.resource_logs
                    for scope in resource.scope_logs
                ),
            )
            return logs_service_pb2.ExportLogsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        CountingLogsService(), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn.send(port)
    server.wait_for_termination()


def emit_all(port: int, emitted: int, max_queue_size: int | None) -> float:
    """Emit `emitted` log records as fast as the caller can through a BatchLogRecordProcessor
    (its default queue of 2,048 records, or `max_queue_size`) to the sink on `port`, then shut
    the provider down (which exports what is queued); returns the seconds from the first emit
    until then. The sink's counter then holds what was delivered."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    # A full queue drops records and says so in a warning; the count of them is the result.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    provider = LoggerProvider()
    exporter = OTLPLogExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    provider.add_log_record_processor(
        BatchLogRecordProcessor(exporter, max_queue_size=max_queue_size)
    )
    logger = provider.get_logger("bench")
    started = time.perf_counter()
    for i in range(emitted):
        logger.emit(body="node-7 leads", attributes={"i": i})
    provider.shutdown()
    elapsed = time.perf_counter() - started
    return elapsed
