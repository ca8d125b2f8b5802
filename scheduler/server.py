"""Assembles the scheduler's gRPC server: JobService, health, reflection and the interceptors."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from jobsched.v1 import (
    executor_service_pb2,
    executor_service_pb2_grpc,
    job_service_pb2,
    job_service_pb2_grpc,
)
from scheduler.api.executor_service import ExecutorService
from scheduler.api.health import DatabaseHealthProbe
from scheduler.api.interceptors import AccessLogInterceptor, ErrorInterceptor
from scheduler.api.job_service import JobService, utcnow
from scheduler.dispatch.dispatcher import Dispatcher
from scheduler.store.database import Database
from scheduler.store.jobs import JobStore
from scheduler.watch import JobWatchHub

log = logging.getLogger("jobsched.scheduler")

DEFAULT_LISTEN = "127.0.0.1:50051"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a SubmitJobs batch of large payloads

# Keepalive consistent with the executors' side: detect dead peers on idle streams, and accept
# client pings as often as every 10 s without a GOAWAY.
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    listen: str = DEFAULT_LISTEN
    shutdown_grace: float = 5.0
    health_interval: float = 1.0
    heartbeat_interval: float = 3.0
    lease: timedelta = timedelta(seconds=30)
    ack_timeout: timedelta = timedelta(seconds=10)


class SchedulerServer:
    """The scheduler's gRPC server (start/stop service). `address` is known after start()."""

    def __init__(
        self,
        db: Database,
        settings: ServerSettings = ServerSettings(),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.settings = settings
        self.server = grpc.aio.server(
            interceptors=[AccessLogInterceptor(), ErrorInterceptor()], options=SERVER_OPTIONS
        )
        self.hub = JobWatchHub()
        self.dispatcher = Dispatcher(
            db, clock, lease=settings.lease, ack_timeout=settings.ack_timeout, hub=self.hub
        )
        job_service_pb2_grpc.add_JobServiceServicer_to_server(
            JobService(
                JobStore(db),
                clock,
                on_new_work=self.dispatcher.wake,
                on_cancel_requested=self.dispatcher.request_cancel,
                hub=self.hub,
            ),
            self.server,
        )
        executor_service_pb2_grpc.add_ExecutorServiceServicer_to_server(
            ExecutorService(self.dispatcher, settings.heartbeat_interval), self.server
        )
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
                executor_service_pb2.DESCRIPTOR.services_by_name["ExecutorService"].full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.probe = DatabaseHealthProbe(db, self.health, interval=settings.health_interval)
        self.address = ""

    async def start(self) -> str:
        port = self.server.add_insecure_port(self.settings.listen)
        if port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.listen}")
        host = self.settings.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        await self.server.start()
        await self.probe.start()
        await self.dispatcher.start()
        log.info(
            "listening", extra={"fields": {"event": "scheduler.listening", "address": self.address}}
        )
        return self.address

    async def stop(self, grace: float | None = None) -> None:
        await self.probe.stop()
        await self.dispatcher.stop()  # closes executor streams so the server can drain
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        log.info("stopped", extra={"fields": {"event": "scheduler.stopped"}})
