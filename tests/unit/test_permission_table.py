"""The RPC -> permission table covers every RPC of every jobsched.v1 service, and nothing else;
each role has exactly the permissions the README promises."""

from __future__ import annotations

import importlib
import pkgutil

import jobsched.v1
from scheduler.auth.permissions import RPC_PERMISSIONS, is_public
from scheduler.domain.auth import ROLE_PERMISSIONS, Permission, Role


def every_rpc() -> set[str]:
    methods: set[str] = set()
    for module_info in pkgutil.iter_modules(jobsched.v1.__path__):
        if not module_info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"jobsched.v1.{module_info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            methods |= {f"/{service.full_name}/{m.name}" for m in service.methods}
    return methods


def test_every_rpc_of_jobsched_v1_is_in_the_table() -> None:
    rpcs = every_rpc()
    assert len(rpcs) > 30  # the walk found the services (JobService alone has 15 RPCs)
    assert sorted(rpcs - RPC_PERMISSIONS.keys()) == []
    assert sorted(RPC_PERMISSIONS.keys() - rpcs) == []  # no stale entries
    assert not any(is_public(m) for m in rpcs)


def test_health_and_reflection_are_public() -> None:
    assert is_public("/grpc.health.v1.Health/Check")
    assert is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not is_public("/grpc.health.v1.HealthX/Check")


def test_roles_nest_and_executors_only_execute() -> None:
    viewer, submitter, operator, admin, executor = (ROLE_PERMISSIONS[r] for r in Role)
    assert viewer == {Permission.READ}
    assert submitter - viewer == {Permission.SUBMIT}
    assert operator - submitter == {
        Permission.OPERATE,
        Permission.MANAGE_QUEUES,
        Permission.MANAGE_SCHEDULES,
        Permission.MANAGE_JOB_TYPES,
    }
    assert admin - operator == {
        Permission.MANAGE_KEYS,
        Permission.READ_CLUSTER,
        Permission.READ_AUDIT,
    }
    assert executor == {Permission.EXECUTE}
    assert all(Permission.EXECUTE not in p for r, p in ROLE_PERMISSIONS.items() if r != "executor")
