"""ClusterService.GetClusterStatus: the live replicas, the leader and its epoch, and the
executors connected to each replica, read from the shared database (any replica answers)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from jobsched.v1 import cluster_service_pb2 as pb
from jobsched.v1 import cluster_service_pb2_grpc
from scheduler.store.leadership import ClusterStore

Context = grpc.aio.ServicerContext[Any, Any]


def _ts(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class ClusterService(cluster_service_pb2_grpc.ClusterServiceServicer):
    def __init__(
        self, store: ClusterStore, clock: Callable[[], datetime], live_within: timedelta
    ) -> None:
        self.store = store
        self.clock = clock
        self.live_within = live_within

    async def GetClusterStatus(
        self, request: pb.GetClusterStatusRequest, context: Context
    ) -> pb.GetClusterStatusResponse:
        leadership, replicas = await self.store.status(self.clock() - self.live_within)
        live = {r.id for r in replicas}
        response = pb.GetClusterStatusResponse()
        if leadership is not None:
            response.epoch = leadership.epoch
            if leadership.leader in live:  # a dead leader's row stays until a successor's bump
                response.leader_id = leadership.leader
                response.leader_since.CopyFrom(_ts(leadership.since))
        for replica in replicas:
            response.replicas.append(
                pb.SchedulerReplica(
                    id=replica.id,
                    address=replica.address,
                    leader=replica.id == response.leader_id,
                    start_time=_ts(replica.started_at),
                    last_seen_time=_ts(replica.last_seen_at),
                    executors=[
                        pb.ConnectedExecutor(
                            name=e.name,
                            capacity=e.capacity,
                            running=e.running,
                            job_types=e.job_types,
                            queues=e.queues,
                            draining=e.draining,
                        )
                        for e in replica.executors
                    ],
                )
            )
        return response
