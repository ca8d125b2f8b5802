"""deploy/Dockerfile and .dockerignore, checked statically.

A real `docker build` is impossible where the tests run (no container daemon), so these
check what the build would do: a build stage makes the wheel from the sources the wheel needs
(every package directory of pyproject.toml, none of them excluded by .dockerignore), a slim
runtime stage installs it with the `server` extra, runs as a numeric non-root user under tini,
and its HEALTHCHECK is `jobsched health` (test_healthcheck.py runs that command for real).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from tests.deploy.chart import REPO
from tests.deploy.dockerfile import DOCKERIGNORE, final_user_ids, instructions, stages


def test_two_stages_build_the_wheel_then_install_it_in_a_slim_runtime() -> None:
    build, runtime = stages()
    assert build.name == "build"
    assert runtime.name == "runtime"
    run_build = " ".join(i.arguments for i in build.all("RUN"))
    assert re.search(r"pip wheel .*--no-deps .*--wheel-dir /dist \.$", run_build) or (
        "python -m build --wheel" in run_build
    ), run_build
    # The runtime takes the wheel from the build stage, not the sources.
    assert runtime.all("COPY") == [] or all("from" in c.flags() for c in runtime.all("COPY"))
    (install,) = [i for i in runtime.all("RUN") if "jobsched-*.whl" in i.arguments]
    assert install.flags()["mount"] == "type=bind,from=build,source=/dist,target=/dist"
    assert re.search(r'"\$\(ls /dist/jobsched-\*\.whl\)\[server\]"', install.arguments)
    # Both stages start from the same slim Python (an ARG), so the wheel's Python is the runtime's.
    (arg,) = [i for i in instructions() if i.keyword == "ARG"]
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.1[1-9]-slim(-\w+)?", arg.arguments)
    assert build.base == runtime.base == "${PYTHON_IMAGE}"


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore excludes `path` (or a parent of it). Docker matches each pattern
    against the path relative to the context, `**` spanning directories; our file has no `!`
    exceptions, which this does not handle (the test below refuses them)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern) or fnmatch.fnmatchcase(
                prefix, pattern.replace("**/", "")
            ):
                return True
    return False


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not [p for p in patterns if p.startswith("!")], "no exceptions: the check is simple"
    return patterns


def wheel_sources() -> set[str]:
    """What the wheel is built from, per pyproject.toml: the metadata files and the directory
    of each top-level package (its package-dir mapping, else its own name; or the `where`
    directories of a packages.find)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools.get("package-dir", {})
    sources = {"pyproject.toml", pyproject["project"]["readme"]}
    sources |= set(pyproject["project"].get("license-files", []))
    packages = setuptools.get("packages", [])
    if isinstance(packages, dict):  # [tool.setuptools.packages.find]: each top-level package's
        find = packages["find"]  # folder, in the first `where` that has it
        for top in (p for p in find.get("include", []) if "." not in p and "*" not in p):
            where = next(w for w in find.get("where", ["."]) if (REPO / w / top).is_dir())
            sources.add(str(Path(where) / top))
    for package in packages if isinstance(packages, list) else []:
        top = package.split(".")[0]
        sources.add(package_dir.get(top, top))
    return sources


def test_the_build_copies_what_the_wheel_needs_and_dockerignore_keeps_it() -> None:
    build = stages()[0]
    copied = [word for c in build.all("COPY") for word in c.words()[:-1]]
    for needed in wheel_sources():
        covered = any(needed == c or needed.startswith(c.rstrip("/") + "/") for c in copied)
        assert covered or "." in copied, f"the build stage does not copy {needed}"
    patterns = ignore_patterns()
    for source in copied:
        assert (REPO / source).exists(), source
        assert not dockerignored(source, patterns), f".dockerignore excludes {source}"
    # What must stay out of the context does.
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".jobsched/pgdata",
        "scheduler/__pycache__/x.pyc",
    ):
        assert dockerignored(path, patterns), path


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    uid, gid = final_user_ids()
    assert uid != 0
    assert gid != 0
    runtime = stages()[-1]
    (useradd,) = [i for i in runtime.all("RUN") if "useradd" in i.arguments]
    assert f"--uid {uid}" in useradd.arguments
    assert f"--gid {gid}" in useradd.arguments
    # Nothing after USER runs as root again.
    keywords = [i.keyword for i in runtime.instructions]
    assert "RUN" not in keywords[keywords.index("USER") :]


def test_tini_is_pid_1_and_jobsched_the_entrypoint() -> None:
    runtime = stages()[-1]
    assert any("install" in i.arguments and "tini" in i.words() for i in runtime.all("RUN"))
    entrypoint = runtime.last("ENTRYPOINT")
    assert entrypoint is not None
    assert entrypoint.exec_form() == ["/usr/bin/tini", "--", "jobsched"]
    cmd = runtime.last("CMD")
    assert cmd is not None
    assert cmd.exec_form() == ["scheduler"]


def test_the_healthcheck_is_jobsched_health_on_the_listen_port() -> None:
    runtime = stages()[-1]
    healthcheck = runtime.last("HEALTHCHECK")
    assert healthcheck is not None
    command = healthcheck.arguments.split(" CMD ", 1)[1]
    assert re.fullmatch(
        r'jobsched --timeout \d+ --address "127\.0\.0\.1:\$\{JOBSCHED_LISTEN##\*:\}" health'
        r" \|\| exit 1",
        command,
    ), command
    env = " ".join(i.arguments for i in runtime.all("ENV"))
    listen = re.search(r"JOBSCHED_LISTEN=(\S+)", env)
    assert listen is not None
    assert listen.group(1) == "0.0.0.0:50051"
    (expose,) = runtime.all("EXPOSE")
    assert expose.arguments == listen.group(1).rpartition(":")[2]


def test_the_runtime_needs_no_writable_root() -> None:
    """The chart mounts the root filesystem read-only: no bytecode written at run time, logs
    unbuffered to stdout."""
    env = " ".join(i.arguments for i in stages()[-1].all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env
