"""A tiny OTLP/gRPC metrics receiver for the tests (the collector's MetricsService, from the
stubs opentelemetry-proto ships): it keeps every export request it is sent, and says what the
latest value of a metric was, by the resource's service.name and the point's attributes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

Point = tuple[str, str, frozenset[tuple[str, str]]]  # service, metric, attributes


def _attributes(values: list[KeyValue]) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in values}


class MetricsReceiver(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self) -> None:
        self.requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.endpoint = ""

    async def Export(
        self,
        request: metrics_service_pb2.ExportMetricsServiceRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> metrics_service_pb2.ExportMetricsServiceResponse:
        self.requests.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()

    def latest(self) -> dict[Point, float]:
        """Each series' last exported value: sums and gauges their value, histograms their
        count."""
        found: dict[Point, float] = {}
        for request in self.requests:
            for resource in request.resource_metrics:
                service = _attributes(list(resource.resource.attributes)).get("service.name", "")
                for scope in resource.scope_metrics:
                    for metric in scope.metrics:
                        kind = metric.WhichOneof("data")
                        assert kind is not None
                        points = getattr(metric, kind).data_points
                        for p in points:
                            labels = frozenset(_attributes(list(p.attributes)).items())
                            if kind == "histogram":
                                number = float(p.count)
                            else:
                                number = p.as_double if p.HasField("as_double") else p.as_int
                            found[(service, metric.name, labels)] = number
        return found

    def value(self, service: str, metric: str, **labels: str) -> float | None:
        return self.latest().get((service, metric, frozenset(labels.items())))


@asynccontextmanager
async def receiving() -> AsyncIterator[MetricsReceiver]:
    receiver = MetricsReceiver()
    server = grpc.aio.server()
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(  # type: ignore[no-untyped-call]
        receiver, server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    receiver.endpoint = f"http://127.0.0.1:{port}"
    try:
        yield receiver
    finally:
        await server.stop(0)
