"""Hypothesis strategies for any protobuf message, read from its descriptor: a field added to a
.proto is fuzzed without a change here.

- `arbitrary(descriptor)`: any message of that type, every field set or not, values of the
  field's wire type taken anywhere in its range plus the values validation is about (empty, NUL,
  huge, negative, unknown enum numbers, nanos out of range);
- `mutated(strategy)`: a message from `strategy` with one field (at any depth) overwritten by
  such a value: mostly-valid requests with one wrong thing in them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

F = FieldDescriptor
MAX_DEPTH = 3

# Text that validation has to think about: empty, blank, NUL (PostgreSQL cannot store it),
# case and spaces around identifiers, long, non-ASCII, an id of the right shape for nothing.
SPECIAL_TEXT = [
    "",
    " ",
    "a\x00b",
    "\x00",
    "Work",
    "work ",
    "default",
    "DEFAULT",
    "x" * 300,
    "x" * 5000,
    "ü\u2028\U0001f600",
    "00000000-0000-0000-0000-000000000000",
    "not-a-uuid",
    "* * * * *",
    "Europe/Nowhere",
    "UTC",
    "-1",
]

_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}


def _message_type(field: FieldDescriptor) -> Descriptor:
    assert field.message_type is not None, field.full_name
    return field.message_type


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=12))


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 2, low, high, 100, 1000, 10**9) if low <= v <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Any value of a non-message field's type."""
    kind = field.type
    if kind == F.TYPE_STRING:
        return text()
    if kind == F.TYPE_BYTES:
        return st.one_of(st.binary(max_size=32), st.just(b"{}"), st.just(b"\x00" * 70_000))
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return st.floats(width=64 if kind == F.TYPE_DOUBLE else 32)
    if kind == F.TYPE_ENUM:
        assert field.enum_type is not None, field.full_name
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), st.integers(-3, max(numbers) + 3))
    low, high = _INT_RANGES[kind]
    return _integers(low, high)


def value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """One value of a field (a message for message fields), ignoring its label."""
    if field.type == F.TYPE_MESSAGE:
        return arbitrary(_message_type(field), depth + 1)
    return scalar(field)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == F.TYPE_MESSAGE and _message_type(field).GetOptions().map_entry


def field_values(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """What to assign to a field: a value, a list of them, or a dict for a map."""
    if _is_map(field):
        entry = _message_type(field)
        key, val = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return st.dictionaries(scalar(key), value(val, depth), max_size=3)
    if field.is_repeated:
        return st.lists(value(field, depth), max_size=3)
    return value(field, depth)


def assign(message: Message, field: FieldDescriptor, data: Any) -> None:
    """Set `field` of `message` to `data` (shaped as `field_values` makes it), replacing what
    was there."""
    if _is_map(field):
        target = getattr(message, field.name)
        target.clear()
        for k, v in data.items():
            if isinstance(v, Message):
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif field.is_repeated:
        message.ClearField(field.name)
        target = getattr(message, field.name)
        for v in data:
            if isinstance(v, Message):
                target.add().CopyFrom(v)
            else:
                target.append(v)
    elif isinstance(data, Message):
        getattr(message, field.name).CopyFrom(data)
    else:
        setattr(message, field.name, data)


def arbitrary(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of this type (nested messages to MAX_DEPTH, left unset below)."""
    cls = GetMessageClass(descriptor)
    if depth >= MAX_DEPTH:
        return st.just(cls())
    optional = {f.name: st.deferred(_lazy(f, depth)) for f in descriptor.fields}

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for name, data in values.items():
            assign(message, descriptor.fields_by_name[name], data)
        return message

    return st.fixed_dictionaries({}, optional=optional).map(build)


def _lazy(field: FieldDescriptor, depth: int) -> Callable[[], st.SearchStrategy[Any]]:
    return lambda: field_values(field, depth)


def _paths(descriptor: Descriptor, depth: int = 0) -> list[tuple[FieldDescriptor, ...]]:
    """Every field path of a message type, down to MAX_DEPTH."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for field in descriptor.fields:
        paths.append((field,))
        singular_message = field.type == F.TYPE_MESSAGE and not field.is_repeated
        if singular_message and depth + 1 < MAX_DEPTH:
            paths.extend((field, *rest) for rest in _paths(_message_type(field), depth + 1))
    return paths


@st.composite
def _mutation(draw: st.DrawFn, base: Message) -> Message:
    message = type(base)()
    message.CopyFrom(base)
    paths = _paths(cast(Descriptor, message.DESCRIPTOR))
    if not paths:
        return message
    path = draw(st.sampled_from(paths))
    target = message
    for step in path[:-1]:
        target = getattr(target, step.name)
    assign(target, path[-1], draw(field_values(path[-1], len(path) - 1)))
    return message


def mutated(strategy: st.SearchStrategy[Message]) -> st.SearchStrategy[Message]:
    """Messages of `strategy` with one field, at any depth, set to any value of its type."""
    return strategy.flatmap(_mutation)
