"""The shared table of bad ballots (bad_ballots.py) through the ledger core, the centre's
checker and the verifier: each answers exactly what the table says, so they cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_ballots import CASES, NA, REASON_CHECKS, BadBallot
from protocol_kit import gateway_outcome, kit, ledger_decisions, ledger_outcome, verifier_outcome

IDS = [case.name for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_ledger(case: BadBallot) -> None:
    subs = case.build(kit())
    outcomes = [ledger_outcome(decision) for decision in ledger_decisions(subs)]
    assert outcomes[:-1] == [None] * (len(subs) - 1), "the good history must be accepted"
    assert outcomes[-1] == case.ledger


@pytest.mark.parametrize("case", [c for c in CASES if c.gateway != NA], ids=[c.name for c in CASES if c.gateway != NA])
def test_the_centre(case: BadBallot) -> None:
    outcome = gateway_outcome(case.build(kit()))
    assert (outcome.outcome, outcome.reason) == case.gateway, outcome.incidents


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.verifier != NA], ids=[c.name for c in CASES if c.verifier != NA]
)
def test_the_verifier(case: BadBallot, tmp_path: Path) -> None:
    failed, report = verifier_outcome(case.build(kit()), tmp_path / "record")
    problems = {n: report.outcomes[n].problems for n in failed}
    assert failed == case.verifier, problems


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_table_itself_holds_one_rule(case: BadBallot) -> None:
    """Where the ledger and the centre both see a case, they name the same rule; the verifier
    fails the check that owns that rule; a good ballot passes everywhere."""
    if case.gateway != NA:
        assert isinstance(case.gateway, tuple) and case.gateway[1] == case.ledger
        assert (case.gateway[0] == "chained") == (case.ledger is None)
    if case.verifier != NA:
        assert isinstance(case.verifier, frozenset)
        if case.ledger is None:
            assert case.verifier == frozenset()
        else:
            assert case.verifier & REASON_CHECKS[case.ledger], "the verifier must fail the rule's own check"
    if NA in (case.gateway, case.verifier):
        assert case.why, "say why a place cannot see this case"
