"""The classic recorder design: one unary gRPC call (RecordBatch of one event) per event."""

from __future__ import annotations

import time

import grpc
from uuid_utils import uuid7

from protoevents.v1 import event_pb2, proxy_service_pb2, proxy_service_pb2_grpc

ELECTED = "protoevents.cluster.v1.ClusterEventType.CLUSTER_EVENT_TYPE_LEADER_ELECTED"


def record_one_by_one(address: str, count: int, tag: str) -> str:
    """Send `count` distinct events, one call each, waiting for each answer as a blocking
    client does; returns the id of the last, which the proxy has persisted on return."""
    source = event_pb2.EventSource(node="node-7", component="unary-client")
    last_id = ""
    with grpc.insecure_channel(address) as channel:
        stub = proxy_service_pb2_grpc.EventProxyServiceStub(channel)
        for i in range(count):
            last_id = str(uuid7())
            event = event_pb2.Event(
                id=last_id, type=ELECTED, message=f"{tag} event {i}", source=source
            )
            event.time.FromNanoseconds(time.time_ns())
            request = proxy_service_pb2.RecordBatchRequest(events=[event])
            response = stub.RecordBatch(request, timeout=30)
            if response.result.accepted_count != 1:
                raise RuntimeError(f"event {i} not accepted: {response.result}")
    return last_id
