"""Every (from, to) pair of host states: legal ones pass, all others raise with a clear message."""

from __future__ import annotations

import itertools

import pytest

from provisioner.core.lifecycle import (
    ALLOWED,
    HostState,
    IllegalTransition,
    can_transition,
    manual_transition,
    transition,
)

S = HostState
LEGAL = {
    (S.enrolled, S.commissioning), (S.enrolled, S.maintenance), (S.enrolled, S.retired),
    (S.commissioning, S.available), (S.commissioning, S.failed),
    (S.available, S.provisioning), (S.available, S.commissioning), (S.available, S.maintenance),
    (S.available, S.retired),
    (S.provisioning, S.active), (S.provisioning, S.failed), (S.provisioning, S.available),
    (S.active, S.releasing), (S.active, S.failed),
    (S.releasing, S.available), (S.releasing, S.failed), (S.releasing, S.retired),
    (S.failed, S.releasing), (S.failed, S.maintenance), (S.failed, S.commissioning), (S.failed, S.retired),
    (S.maintenance, S.commissioning), (S.maintenance, S.available), (S.maintenance, S.retired),
}


@pytest.mark.parametrize("cur,tgt", list(itertools.product(S, S)))
def test_every_pair(cur: HostState, tgt: HostState) -> None:
    if (cur, tgt) in LEGAL:
        assert can_transition(cur, tgt)
        assert transition(cur, tgt) is tgt
    else:
        assert not can_transition(cur, tgt)
        with pytest.raises(IllegalTransition) as exc:
            transition(cur, tgt)
        assert f"from {cur} to {tgt}" in str(exc.value)


def test_table_is_exactly_the_documented_one() -> None:
    assert {(a, b) for a, bs in ALLOWED.items() for b in bs} == LEGAL


def test_happy_path_cycle() -> None:
    state = S.enrolled
    for nxt in (S.commissioning, S.available, S.provisioning, S.active, S.releasing, S.available):
        state = transition(state, nxt)
    assert state is S.available


def test_retired_is_terminal_and_says_so() -> None:
    with pytest.raises(IllegalTransition, match="none \\(terminal state\\)"):
        transition(S.retired, S.available)


def test_unknown_state_is_rejected() -> None:
    with pytest.raises(ValueError):
        transition("enrolled", "flying")


MANUAL_OK = {(S.enrolled, S.maintenance), (S.available, S.maintenance), (S.failed, S.maintenance),
             (S.maintenance, S.available), (S.enrolled, S.retired), (S.available, S.retired),
             (S.failed, S.retired), (S.maintenance, S.retired)}


@pytest.mark.parametrize("cur,tgt", list(itertools.product(S, [S.maintenance, S.available, S.retired])))
def test_manual_moves(cur: HostState, tgt: HostState) -> None:
    if (cur, tgt) in MANUAL_OK:
        assert manual_transition(cur, tgt) is tgt
    else:
        with pytest.raises(IllegalTransition, match="by hand"):
            manual_transition(cur, tgt)
