"""Label filters of the job lists: each "key=value" (the job has the label with that value) or
"key" (the job has the label, any value); a job is listed when all of them hold."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.domain.echo import echo
from scheduler.domain.errors import FieldViolation, InvalidArgument
from scheduler.domain.validation import MAX_LABEL_VALUE, NAME_PATTERN

MAX_LABEL_FILTERS = 16


@dataclass(frozen=True, slots=True, order=True)
class LabelFilter:
    key: str
    value: str | None  # None: any value


def parse_label_filters(values: Sequence[str], path: str = "labels") -> tuple[LabelFilter, ...]:
    """Raise InvalidArgument naming each filter that is not one (`labels[i]`)."""
    violations: list[FieldViolation] = []
    if len(values) > MAX_LABEL_FILTERS:
        raise InvalidArgument(
            [
                FieldViolation(
                    path,
                    f"at most {MAX_LABEL_FILTERS} label filters",
                    limit=str(MAX_LABEL_FILTERS),
                )
            ]
        )
    filters: list[LabelFilter] = []
    for i, item in enumerate(values):
        key, sep, value = item.partition("=")
        if not NAME_PATTERN.fullmatch(key):
            violations.append(
                FieldViolation(
                    f"{path}[{i}]",
                    f"{echo(item)} must be key=value or key, the key matching "
                    f"{NAME_PATTERN.pattern}",
                )
            )
        elif len(value) > MAX_LABEL_VALUE:
            violations.append(
                FieldViolation(
                    f"{path}[{i}]",
                    f"value is longer than {MAX_LABEL_VALUE} characters",
                    limit=str(MAX_LABEL_VALUE),
                )
            )
        else:
            filters.append(LabelFilter(key, value if sep else None))
    if violations:
        raise InvalidArgument(violations)
    return tuple(filters)
