"""The dependency direction (docs/architecture.md): the client package (`jobsched`) and the
executor never import the scheduler, so a client-only install works without the server's
dependencies. Read from the source, every import statement, lazy ones inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT_SIDE = {
    "jobsched": REPO / "services" / "jobsched",
    "executor": REPO / "executor",
    "dashboard": REPO / "dashboard",
}
SERVER_ONLY = ("scheduler", "sqlalchemy", "asyncpg", "alembic", "croniter", "grpc_reflection")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize("package", sorted(CLIENT_SIDE))
def test_the_client_side_never_imports_the_server(package: str) -> None:
    offending = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in sorted(CLIENT_SIDE[package].rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] in SERVER_ONLY
    ]
    assert offending == []


def test_the_check_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f():\n    from scheduler.__main__ import main\n    import sqlalchemy\n")
    assert imported_modules(sample) == [(2, "scheduler.__main__"), (3, "sqlalchemy")]


def test_the_client_package_does_not_import_the_executor() -> None:
    """The executor stands on the client (its channels, TLS, logs): the arrow runs one way."""
    offending = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for path in sorted(CLIENT_SIDE["jobsched"].rglob("*.py"))
        for line, module in imported_modules(path)
        if module.split(".")[0] == "executor"
    ]
    assert offending == []
