"""The job state machine: every allowed transition, and nothing else, lives in this table.

    submit ──► WAITING ──deps met──► QUEUED / SCHEDULED
    submit ──► SCHEDULED ──run_at reached──► QUEUED
    submit ──► QUEUED ──claim──► RUNNING
    RUNNING ──succeed──► SUCCEEDED                       (terminal)
    RUNNING ──fail, attempts left──► SCHEDULED           (retry backoff, error kept)
    RUNNING ──fail, last attempt / non-retryable──► DEAD (terminal, the dead-letter state)
    RUNNING ──release (handed back, ack timeout)──► QUEUED
    RUNNING ──rescue (lease expired)──► QUEUED / SCHEDULED / DEAD
    WAITING / SCHEDULED / QUEUED / RUNNING ──cancel──► CANCELLED (terminal)
    DEAD / CANCELLED ──retry (manual)──► QUEUED

A job in RUNNING is not cancelled by the client directly: CancelJob records the request and the
executor ends the attempt with CANCELLED. Every transition in the store is one UPDATE guarded by
the expected state and attempt, so a caller that lost a race changes nothing.
"""

from __future__ import annotations

import enum

from scheduler.domain.errors import InvalidTransition


class JobState(enum.StrEnum):
    """Job states; the values are the labels of the `job_state` enum in PostgreSQL."""

    WAITING = "waiting"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATES


ACTIVE_STATES = frozenset({JobState.WAITING, JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING})
TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED})
INITIAL_STATES = frozenset({JobState.WAITING, JobState.SCHEDULED, JobState.QUEUED})


class Event(enum.StrEnum):
    """What makes a job change state."""

    DEPENDENCIES_MET = "dependencies_met"
    PROMOTE = "promote"
    CLAIM = "claim"
    SUCCEED = "succeed"
    FAIL_RETRY = "fail_retry"
    FAIL_FINAL = "fail_final"
    RELEASE = "release"
    RESCUE = "rescue"
    CANCEL = "cancel"
    RETRY = "retry"


_S = JobState

# event -> {from state: allowed target states}
TRANSITIONS: dict[Event, dict[JobState, frozenset[JobState]]] = {
    Event.DEPENDENCIES_MET: {_S.WAITING: frozenset({_S.QUEUED, _S.SCHEDULED})},
    Event.PROMOTE: {_S.SCHEDULED: frozenset({_S.QUEUED})},
    Event.CLAIM: {_S.QUEUED: frozenset({_S.RUNNING})},
    Event.SUCCEED: {_S.RUNNING: frozenset({_S.SUCCEEDED})},
    Event.FAIL_RETRY: {_S.RUNNING: frozenset({_S.SCHEDULED})},
    Event.FAIL_FINAL: {_S.RUNNING: frozenset({_S.DEAD})},
    Event.RELEASE: {_S.RUNNING: frozenset({_S.QUEUED})},
    Event.RESCUE: {_S.RUNNING: frozenset({_S.QUEUED, _S.SCHEDULED, _S.DEAD})},
    Event.CANCEL: {
        _S.WAITING: frozenset({_S.CANCELLED}),
        _S.SCHEDULED: frozenset({_S.CANCELLED}),
        _S.QUEUED: frozenset({_S.CANCELLED}),
        _S.RUNNING: frozenset({_S.CANCELLED}),
    },
    Event.RETRY: {_S.DEAD: frozenset({_S.QUEUED}), _S.CANCELLED: frozenset({_S.QUEUED})},
}


def _allowed_pairs() -> dict[JobState, frozenset[JobState]]:
    pairs: dict[JobState, set[JobState]] = {s: set() for s in JobState}
    for by_state in TRANSITIONS.values():
        for src, targets in by_state.items():
            pairs[src] |= targets
    return {s: frozenset(t) for s, t in pairs.items()}


ALLOWED: dict[JobState, frozenset[JobState]] = _allowed_pairs()
"""from state -> every state it may move to, by any event."""


def can_transition(src: JobState, dst: JobState) -> bool:
    """Whether any event moves a job from `src` to `dst`."""
    return dst in ALLOWED[src]


def check_transition(src: JobState, event: Event, dst: JobState) -> None:
    """Raise InvalidTransition unless `event` may move a job from `src` to `dst`."""
    targets = TRANSITIONS[event].get(src)
    if targets is None:
        sources = ", ".join(sorted(s.name for s in TRANSITIONS[event]))
        raise InvalidTransition(
            f"cannot {event.value.replace('_', ' ')} a job that is {src.name} (allowed from: {sources})"
        )
    if dst not in targets:
        raise InvalidTransition(
            f"{event.value} moves a {src.name} job to {', '.join(sorted(t.name for t in targets))}, "
            f"not {dst.name}"
        )


class CancelAction(enum.Enum):
    """What CancelJob does to a job in a given state."""

    CANCEL_NOW = "cancel_now"
    REQUEST = "request"  # running: the executor is asked to stop the handler


def cancel_action(state: JobState) -> CancelAction:
    """Decide what cancelling a job in `state` means; terminal jobs cannot be cancelled."""
    if state is JobState.RUNNING:
        return CancelAction.REQUEST
    check_transition(state, Event.CANCEL, JobState.CANCELLED)
    return CancelAction.CANCEL_NOW


def check_deletable(state: JobState) -> None:
    """A running job cannot be deleted: its executor still works on it."""
    if state is JobState.RUNNING:
        raise InvalidTransition("cannot delete a RUNNING job; cancel it first")


def retry_max_attempts(attempt: int, max_attempts: int) -> int:
    """Max attempts after a manual retry: one more attempt is granted when they were exhausted."""
    return max(max_attempts, attempt + 1)
