"""Reading deploy/Dockerfile for the static checks: its instructions, grouped by stage.

Enough of the Dockerfile grammar for our file: comments, parser directives, line continuations
with a backslash, instructions with flags (`--from=`, `--mount=`), JSON (exec) and shell forms.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tests.deploy.chart import REPO

DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # the rest, continuations joined with a space

    def flags(self) -> dict[str, str]:
        """Leading --name=value flags (COPY --from=build, RUN --mount=...)."""
        found: dict[str, str] = {}
        for word in self.arguments.split():
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            found[name] = value
        return found

    def words(self) -> list[str]:
        """The arguments after the flags, split on white space."""
        words = self.arguments.split()
        while words and words[0].startswith("--"):
            words.pop(0)
        return words

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form ENTRYPOINT/CMD, None for the shell form."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        assert isinstance(parsed, list), text
        assert all(isinstance(p, str) for p in parsed), text
        return parsed


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    found: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue  # comments and parser directives (# syntax=...)
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, arguments = text.partition(" ")
        found.append(Instruction(keyword.upper(), arguments.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def stages(path: Path = DOCKERFILE) -> list[Stage]:
    """The build stages in order (instructions before the first FROM, i.e. ARGs, are dropped)."""
    result: list[Stage] = []
    for instruction in instructions(path):
        if instruction.keyword == "FROM":
            words = instruction.words()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            result.append(Stage(base=words[0], name=name))
        elif result:
            result[-1].instructions.append(instruction)
    return result


def final_user_ids() -> tuple[int, int]:
    """The final stage's USER as numeric (uid, gid)."""
    user = stages()[-1].last("USER")
    assert user is not None, "the final stage has no USER"
    uid, _, gid = user.arguments.partition(":")
    assert uid.isdigit(), f"USER {user.arguments} is not numeric uid:gid"
    assert gid.isdigit(), f"USER {user.arguments} is not numeric uid:gid"
    return int(uid), int(gid)
