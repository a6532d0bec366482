"""The declared exchange tables: every action exists, every state can be
reached, a pair a table lacks is a RemoteError for the peer's inputs and an
IllegalTransition for ours."""

from __future__ import annotations

import inspect

import pytest

from engine.ike.errors import IllegalTransition, RemoteError
from engine.ike.exchange import Exchange, Table
from engine.ike.exchanges import MODULES


def classes(module):
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, Exchange) and getattr(c, "TABLE", None) is module.TABLE]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_action_is_a_method(module):
    methods = {name for c in classes(module) for name, _ in inspect.getmembers(c, inspect.isfunction)}
    assert classes(module), module
    assert module.TABLE.actions() <= methods, module.TABLE.actions() - methods


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_state_is_reachable_and_final_states_only_abort(module):
    table: Table = module.TABLE
    initial = {c.INITIAL for c in classes(module)}
    seen, todo = set(initial), list(initial)
    while todo:
        state = todo.pop()
        for (s, _), step in table.rules.items():
            if s == state and step.next not in seen:
                seen.add(step.next)
                todo.append(step.next)
    assert seen == table.states(), table.states() - seen
    for (state, inp), step in table.rules.items():
        if state in table.final:
            assert step.next == state and step.action is None, (state, inp)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_unknown_pairs_are_remote_errors_for_the_peer_and_bugs_for_us(module):
    table: Table = module.TABLE
    inputs = {inp for _, inp in table.rules}
    for state in table.states():
        for inp in inputs:
            if (state, inp) in table.rules:
                continue
            error = RemoteError if inp in table.remote else IllegalTransition
            with pytest.raises(error):
                table.step(state, inp)
