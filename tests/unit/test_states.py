"""The job state machine, checked against tables written out here from the design.

The expected tables are deliberately spelled out by hand rather than derived from
`scheduler.domain.states`: a change to the module's table must be mirrored here on purpose.
"""

from __future__ import annotations

import itertools

import pytest

from scheduler.domain.errors import FailedPrecondition, InvalidTransition, JobschedError
from scheduler.domain.states import (
    ACTIVE_STATES,
    INITIAL_STATES,
    TERMINAL_STATES,
    CancelAction,
    Event,
    JobState,
    can_transition,
    cancel_action,
    check_deletable,
    check_transition,
    retry_max_attempts,
)

W = JobState.WAITING
S = JobState.SCHEDULED
Q = JobState.QUEUED
R = JobState.RUNNING
OK = JobState.SUCCEEDED
D = JobState.DEAD
C = JobState.CANCELLED

ALL_STATES = (W, S, Q, R, OK, D, C)
ALL_EVENTS = tuple(Event)

# from state -> every state it may move to (by any event).
EXPECTED_ALLOWED: dict[JobState, set[JobState]] = {
    W: {Q, S, C},
    S: {Q, C},
    Q: {R, C},
    R: {OK, S, Q, D, C},
    OK: set(),
    D: {Q},
    C: {Q},
}

# event -> {from state: allowed target states}; a source that is absent is not allowed at all.
EXPECTED_BY_EVENT: dict[Event, dict[JobState, set[JobState]]] = {
    Event.DEPENDENCIES_MET: {W: {Q, S}},
    Event.PROMOTE: {S: {Q}},
    Event.CLAIM: {Q: {R}},
    Event.SUCCEED: {R: {OK}},
    Event.FAIL_RETRY: {R: {S}},
    Event.FAIL_FINAL: {R: {D}},
    Event.RELEASE: {R: {Q}},
    Event.RESCUE: {R: {Q, S, D}},
    Event.CANCEL: {W: {C}, S: {C}, Q: {C}, R: {C}},
    Event.RETRY: {D: {Q}, C: {Q}},
}


def _pair_id(pair: tuple[JobState, JobState]) -> str:
    return f"{pair[0].name}->{pair[1].name}"


def _triple_id(triple: tuple[JobState, Event, JobState]) -> str:
    src, event, dst = triple
    return f"{event.name}:{src.name}->{dst.name}"


def _allowed(src: JobState, event: Event, dst: JobState) -> bool:
    try:
        check_transition(src, event, dst)
    except InvalidTransition:
        return False
    return True


ALL_PAIRS = list(itertools.product(ALL_STATES, ALL_STATES))
ALL_TRIPLES = [
    (src, event, dst) for event in ALL_EVENTS for src in ALL_STATES for dst in ALL_STATES
]


# --- the enums themselves -------------------------------------------------------------------


def test_states_are_exactly_the_seven_of_the_design():
    assert set(JobState) == set(ALL_STATES)
    assert len(JobState) == 7


def test_state_values_are_the_postgres_enum_labels():
    assert {s.name: s.value for s in JobState} == {
        "WAITING": "waiting",
        "SCHEDULED": "scheduled",
        "QUEUED": "queued",
        "RUNNING": "running",
        "SUCCEEDED": "succeeded",
        "DEAD": "dead",
        "CANCELLED": "cancelled",
    }


def test_state_parses_from_its_label():
    assert JobState("running") is JobState.RUNNING
    with pytest.raises(ValueError, match="RUNNING"):
        JobState("RUNNING")


def test_events_are_exactly_the_expected_ones():
    assert set(Event) == set(EXPECTED_BY_EVENT)
    assert {e.name: e.value for e in Event} == {
        "DEPENDENCIES_MET": "dependencies_met",
        "PROMOTE": "promote",
        "CLAIM": "claim",
        "SUCCEED": "succeed",
        "FAIL_RETRY": "fail_retry",
        "FAIL_FINAL": "fail_final",
        "RELEASE": "release",
        "RESCUE": "rescue",
        "CANCEL": "cancel",
        "RETRY": "retry",
    }


def test_expected_tables_agree_with_each_other():
    # Guards the hand-written tables in this file: the per-event table must add up to the pair table.
    union: dict[JobState, set[JobState]] = {s: set() for s in ALL_STATES}
    for by_state in EXPECTED_BY_EVENT.values():
        for src, targets in by_state.items():
            union[src] |= targets
    assert union == EXPECTED_ALLOWED


# --- can_transition: all 49 pairs -----------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=[_pair_id(p) for p in ALL_PAIRS])
def test_can_transition(src, dst):
    assert can_transition(src, dst) is (dst in EXPECTED_ALLOWED[src])


def test_pair_table_covers_49_pairs_with_14_allowed():
    assert len(ALL_PAIRS) == 49
    assert sum(can_transition(a, b) for a, b in ALL_PAIRS) == 14


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.name)
def test_no_state_transitions_to_itself(state):
    assert not can_transition(state, state)


# --- check_transition: all 490 (state, event, target) triples -------------------------------


@pytest.mark.parametrize(
    ("src", "event", "dst"), ALL_TRIPLES, ids=[_triple_id(t) for t in ALL_TRIPLES]
)
def test_check_transition(src, event, dst):
    allowed = dst in EXPECTED_BY_EVENT[event].get(src, set())
    if allowed:
        check_transition(src, event, dst)  # must not raise
    else:
        with pytest.raises(InvalidTransition) as exc:
            check_transition(src, event, dst)
        assert src.name in str(exc.value)
        assert src.name in exc.value.message


def test_triple_table_covers_490_triples_with_17_allowed():
    assert len(ALL_TRIPLES) == 490
    assert sum(_allowed(*t) for t in ALL_TRIPLES) == 17


def test_check_transition_from_a_wrong_state_lists_the_allowed_sources():
    with pytest.raises(InvalidTransition) as exc:
        check_transition(OK, Event.CANCEL, C)
    message = str(exc.value)
    assert "SUCCEEDED" in message
    assert "cancel" in message
    for source in ("WAITING", "SCHEDULED", "QUEUED", "RUNNING"):
        assert source in message


def test_check_transition_with_a_multi_word_event_reads_naturally():
    with pytest.raises(InvalidTransition, match=r"dependencies met .*QUEUED"):
        check_transition(Q, Event.DEPENDENCIES_MET, S)


def test_check_transition_to_a_wrong_target_names_source_target_and_allowed_targets():
    with pytest.raises(InvalidTransition) as exc:
        check_transition(R, Event.FAIL_RETRY, D)
    message = str(exc.value)
    assert "RUNNING" in message
    assert "DEAD" in message
    assert "SCHEDULED" in message


def test_invalid_transition_is_a_failed_precondition():
    with pytest.raises(InvalidTransition) as exc:
        check_transition(OK, Event.RETRY, Q)
    assert isinstance(exc.value, FailedPrecondition)
    assert isinstance(exc.value, JobschedError)
    assert exc.value.reason == "INVALID_TRANSITION"


@pytest.mark.parametrize("state", [OK, D, C], ids=lambda s: s.name)
def test_terminal_states_cannot_be_claimed_or_succeeded(state):
    for event, dst in ((Event.CLAIM, R), (Event.SUCCEED, OK), (Event.FAIL_FINAL, D)):
        with pytest.raises(InvalidTransition, match=state.name):
            check_transition(state, event, dst)


# --- partitions of the state set ------------------------------------------------------------


EXPECTED_TERMINAL = {OK, D, C}
EXPECTED_ACTIVE = {W, S, Q, R}
EXPECTED_INITIAL = {W, S, Q}


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.name)
def test_is_terminal(state):
    assert state.is_terminal is (state in EXPECTED_TERMINAL)


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.name)
def test_is_active(state):
    assert state.is_active is (state in EXPECTED_ACTIVE)


@pytest.mark.parametrize("state", ALL_STATES, ids=lambda s: s.name)
def test_every_state_is_either_active_or_terminal(state):
    assert state.is_active != state.is_terminal


def test_state_sets():
    assert set(TERMINAL_STATES) == EXPECTED_TERMINAL
    assert set(ACTIVE_STATES) == EXPECTED_ACTIVE
    assert set(INITIAL_STATES) == EXPECTED_INITIAL
    assert not TERMINAL_STATES & ACTIVE_STATES
    assert set(JobState) == TERMINAL_STATES | ACTIVE_STATES
    assert INITIAL_STATES <= ACTIVE_STATES


def test_succeeded_is_a_sink():
    assert not any(_allowed(OK, event, dst) for event in ALL_EVENTS for dst in ALL_STATES)


@pytest.mark.parametrize("state", [D, C], ids=lambda s: s.name)
def test_dead_and_cancelled_leave_only_by_manual_retry(state):
    leaving = {
        (event, dst) for event in ALL_EVENTS for dst in ALL_STATES if _allowed(state, event, dst)
    }
    assert leaving == {(Event.RETRY, Q)}


# --- cancel_action --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (W, CancelAction.CANCEL_NOW),
        (S, CancelAction.CANCEL_NOW),
        (Q, CancelAction.CANCEL_NOW),
        (R, CancelAction.REQUEST),
    ],
    ids=lambda v: v.name,
)
def test_cancel_action_of_active_states(state, expected):
    assert cancel_action(state) is expected


@pytest.mark.parametrize("state", [OK, D, C], ids=lambda s: s.name)
def test_cancel_action_of_terminal_states_is_rejected(state):
    with pytest.raises(InvalidTransition) as exc:
        cancel_action(state)
    assert state.name in str(exc.value)


def test_cancel_action_covers_every_state():
    decided = set()
    for state in ALL_STATES:
        try:
            cancel_action(state)
        except InvalidTransition:
            continue
        decided.add(state)
    assert decided == EXPECTED_ACTIVE


# --- check_deletable ------------------------------------------------------------------------


def test_running_job_is_not_deletable():
    with pytest.raises(InvalidTransition, match="RUNNING") as exc:
        check_deletable(R)
    assert "cancel" in str(exc.value)


@pytest.mark.parametrize("state", [W, S, Q, OK, D, C], ids=lambda s: s.name)
def test_other_states_are_deletable(state):
    check_deletable(state)  # must not raise


# --- retry_max_attempts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "expected"),
    [
        (3, 3, 4),  # exhausted: one more attempt is granted
        (1, 1, 2),
        (100, 100, 101),
        (1, 3, 3),  # non-retryable failure on the first attempt: the budget is kept
        (2, 3, 3),
        (0, 1, 1),  # cancelled before ever running
        (0, 3, 3),
        (5, 3, 6),  # more attempts than the limit (e.g. earlier manual retries)
    ],
)
def test_retry_max_attempts(attempt, max_attempts, expected):
    result = retry_max_attempts(attempt, max_attempts)
    assert result == expected
    assert result >= max_attempts
    assert result > attempt
