"""`python -m bench.otlp_sink`: an OTLP/gRPC trace receiver that accepts every export and
decodes nothing (a collector's transport without its work), for bench/telemetry_overhead.py.
Prints ``listening 127.0.0.1:PORT`` once serving and ``exports N`` when SIGTERM stops it."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
_EMPTY = trace_service_pb2.ExportTraceServiceResponse()


async def serve() -> None:
    exports = 0

    async def export(request: bytes, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        nonlocal exports
        exports += 1
        return _EMPTY

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Export": grpc.unary_unary_rpc_method_handler(
                export,
                request_deserializer=lambda raw: raw,
                response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print(f"listening 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await server.stop(0)
    print(f"exports {exports}", flush=True)


if __name__ == "__main__":
    asyncio.run(serve())
