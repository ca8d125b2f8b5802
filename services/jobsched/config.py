"""Configuration for every jobsched command line: one precedence, flag > environment > file >
default, and the TOML file behind the third.

A file has one table per program (`[scheduler]`, `[executor]`, `[client]`, ...). A key is the
name its flag's value has in the program (argparse's dest): the flag without its dashes, `-`
written `_` (`--heartbeat-interval 3` is `heartbeat_interval = 3.0`), and for a repeatable flag
the plural it collects into (`schedulers = ["a:50051"]` for `--scheduler`, `queues` for
`--queue`); a switch takes a boolean. Durations are seconds, as on the command line.

`resolve` applies it to an argparse parser: it finds the file (`--config FILE`, else the
environment variable JOBSCHED_CONFIG), checks the program's table against the parser's options
(an unknown key or a bad value is a `ConfigError` naming the key and the file), and parses the
command line with each option's default taken from its environment variable if set, else from
the file, else from the parser. It also says where each value came from, which `jobsched config
show` prints (with secrets redacted: `redact`).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "JOBSCHED_CONFIG"
CONFIG_FLAG = "--config"
# Keys whose values are secrets wherever they appear: shown as *** by `redact`.
SECRET_KEYS = frozenset({"token", "api_key", "password", "secret", "tls_key"})
# A password given as a URL's query parameter (libpq takes ?password=... and ?sslpassword=...).
_QUERY_SECRET = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)
# The tables a file may have: one per program that reads it.
SECTIONS = ("scheduler", "executor", "client", "dashboard")


class ConfigError(Exception):
    """The configuration file cannot be used: unreadable, not TOML, an unknown key or a bad
    value. The message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where an effective value came from: "flag", "env NAME", "file PATH" or "default"."""

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}".strip()


@dataclass(frozen=True, slots=True)
class Resolved:
    """A parsed command line, with the source of each option's value and the file used."""

    args: argparse.Namespace
    sources: dict[str, Source]
    path: Path | None
    keys: tuple[str, ...] = ()  # the keys a file may set (the parser's options)


def config_path(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Path | None:
    """The file named by --config in `argv` (also --config=FILE), else by JOBSCHED_CONFIG."""
    for i, arg in enumerate(argv):
        if arg == CONFIG_FLAG and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.startswith(CONFIG_FLAG + "="):
            return Path(arg.split("=", 1)[1])
    value = environ.get(CONFIG_ENV, "").strip()
    return Path(value) if value else None


def load(path: Path) -> dict[str, Any]:
    """The file's tables; ConfigError when it cannot be read or is not TOML."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for name, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {name!r} must be a table ([{name}]), not a value")
        if name not in SECTIONS:
            known = ", ".join(f"[{each}]" for each in SECTIONS)
            raise ConfigError(f"{path}: no table [{name}] is read by jobsched (known: {known})")
    return data


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options that a file may set, by key (their dest)."""
    options: dict[str, argparse.Action] = {}
    for action in parser._actions:  # argparse has no public accessor for them
        if not action.option_strings or action.dest in {"help", "config"}:
            continue
        if isinstance(action, argparse._VersionAction):
            continue
        options[action.dest] = action
    return options


def _convert(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    """A file value as the option's value, or ConfigError naming the key."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} = {value!r}: expected {expected}")

    if action.nargs == 0:  # a switch (store_true, store_false, store_const)
        if not isinstance(value, bool):
            raise bad("true or false")
        const = action.const
        return const if value else (not const if isinstance(const, bool) else action.default)
    many = _collects(action) or action.nargs in {"*", "+"}
    if many:
        if not isinstance(value, list):
            raise bad("a list")
        return [_one(action, key, item, where) for item in value]
    if isinstance(value, list | dict):
        raise bad("a single value")
    return _one(action, key, value, where)


def _one(action: argparse.Action, key: str, value: Any, where: str) -> Any:
    if isinstance(value, bool) and action.type is not None:
        raise ConfigError(f"{where}: {key} = {value!r}: expected a value, not true or false")
    converter = action.type
    try:
        converted = converter(str(value)) if callable(converter) else value
    except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {key} = {value!r}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(repr(c) for c in action.choices)
        raise ConfigError(f"{where}: {key} = {value!r}: must be one of {choices}")
    return converted


def _env_value(action: argparse.Action, name: str, raw: str) -> Any:
    """An environment variable's text as the option's value (lists are comma-separated)."""
    where = f"environment variable {name}"
    if action.nargs == 0:
        text = raw.strip().lower()
        if text not in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            raise ConfigError(f"{where} = {raw!r}: expected true or false")
        return _convert(action, name, text in {"1", "true", "yes", "on"}, where)
    if _collects(action):
        items = [part.strip() for part in raw.split(",") if part.strip()]
        return _convert(action, name, items, where)
    return _one(action, name, raw, where)


def resolve(
    parser: argparse.ArgumentParser,
    section: str,
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Resolved:
    """Parse `argv` with `parser` under flag > environment > file > default.

    `env` maps option keys to their environment variables (`{"listen": "JOBSCHED_LISTEN"}`).
    The parser must have a `--config` option (see `add_config_option`); an error in the file or
    an environment variable is reported through `parser.error` (exit 2, one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = env or {}
    options = _options(parser)
    for key in env:
        if key not in options:
            raise ValueError(f"env names {key!r}, which is no option of {parser.prog}")
    path = config_path(argv, environ)
    defaults: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    try:
        table: dict[str, Any] = {}
        if path is not None:
            table = load(path).get(section, {})
            unknown = sorted(set(table) - set(options))
            if unknown:
                raise ConfigError(
                    f"{path}: [{section}] has no key {unknown[0]!r} "
                    f"(known: {', '.join(sorted(options))})"
                )
        for key, action in options.items():
            name = env.get(key)
            if name is not None and environ.get(name, "") != "":
                defaults[action.dest] = _env_value(action, name, environ[name])
                sources[action.dest] = Source("env", name)
            elif key in table:
                defaults[action.dest] = _convert(action, key, table[key], f"{path} [{section}]")
                sources[action.dest] = Source("file", str(path))
            else:
                sources[action.dest] = Source("default")
    except ConfigError as exc:
        parser.error(str(exc))
    given = _given_on_command_line(parser, argv)
    parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    for dest, value in given.items():
        sources[dest] = Source("flag")
        if _collects(options.get(dest)):
            # argparse appends a repeatable flag to its default (the parser's, the file's or
            # the environment's): the flags replace it instead.
            setattr(args, dest, value)
    return Resolved(args, sources, path, tuple(options))


@dataclass(frozen=True, slots=True)
class Program:
    """A command line that reads a configuration table: its `section`, how to build its parser,
    and the environment variable of each option that has one (`resolve`'s `env`)."""

    section: str
    build_parser: Callable[[], argparse.ArgumentParser]
    env: Mapping[str, str] = field(default_factory=dict)

    def resolve(
        self, argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ
    ) -> Resolved:
        return resolve(self.build_parser(), self.section, argv, env=self.env, environ=environ)


class _Quiet(Exception):
    """Raised instead of printing and exiting while `_given_on_command_line` parses."""


def _collects(action: argparse.Action | None) -> bool:
    """Whether the option collects repeated flags into a list (append, extend)."""
    return isinstance(action, argparse._AppendAction | argparse._ExtendAction)


def _given_on_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> dict[str, Any]:
    """The options `argv` sets itself, with their values (parsed once, silently, with every
    default suppressed). Errors and --help are left to the real parse, which reports them."""
    if any(arg in {"-h", "--help"} for arg in argv):
        return {}
    saved = {action: action.default for action in parser._actions}
    saved_defaults = dict(parser._defaults)

    def quiet(*args: Any, **kwargs: Any) -> Any:
        raise _Quiet

    original_error, original_exit = parser.error, parser.exit
    try:
        for action in parser._actions:
            action.default = argparse.SUPPRESS
        parser._defaults.clear()
        parser.error = quiet  # type: ignore[method-assign]
        parser.exit = quiet  # type: ignore[method-assign]
        namespace, _ = parser.parse_known_args(argv)
    except _Quiet:
        return {}
    finally:
        for action, default in saved.items():
            action.default = default
        parser._defaults.update(saved_defaults)
        parser.error, parser.exit = original_error, original_exit  # type: ignore[method-assign]
    return dict(vars(namespace))


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """The --config option every program's parser has (read by `resolve` itself)."""
    parser.add_argument(
        CONFIG_FLAG,
        metavar="FILE",
        help=f"TOML configuration file (env {CONFIG_ENV}); flags and environment variables "
        "override it",
    )


def redact(key: str, value: Any) -> Any:
    """A value fit to print: secrets as ***, passwords in URLs hidden."""
    if value is None:
        return None
    if any(part in key for part in SECRET_KEYS) and not key.endswith("_file"):
        return "***"
    if isinstance(value, str) and "://" in value:
        value = _QUERY_SECRET.sub(r"\1***", value)
        scheme, rest = value.split("://", 1)
        credentials, at, host = rest.rpartition("@")
        if at and ":" in credentials:
            user = credentials.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}"
    if isinstance(value, list):
        return [redact(key, v) for v in value]
    return value
