"""Reconciliation at the centre (gateway/reconcile.py), the pure part: which figures agree,
which discrepancy is named, and what is shown as pending rather than as a discrepancy. The
same code runs over real stores in test_municipal_cli.py (`gateway status`)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from election.encoding import canonical_bytes
from gateway.reconcile import MunicipalFigures, StationFigures, closing_counts, reconcile


def early(station: str, check_ins: int | None, ballots: int | None, kind: str = "early") -> StationFigures:
    return StationFigures(station, "kaga", kind, check_ins, ballots)


def day(station: str, check_ins: int | None, ballots: int | None, marks: tuple[int, int, int] | None) -> StationFigures:
    return StationFigures(station, "kaga", "election_day", check_ins, ballots, marks)


KAGA = MunicipalFigures("kaga", "closed", 100, early_marks=5, day_marks=3)


def test_figures_that_agree_raise_nothing():
    found = reconcile([early("st-a", 3, 3), early("st-b", 2, 2, "common"), day("st-d", 3, 3, (3, 0, 0))], [KAGA])
    assert found.problems == []
    text = "\n".join(found.text())
    assert "st-a (kaga, early): 3 check-ins, 3 ballots, marked on the municipal register" in text
    assert "st-d (kaga, election-day): 3 check-ins, 3 ballots, 3 marks sent back" in text
    assert "5 check-ins at early/common places; in all 8 check-ins, 8 ballots, 0 voted twice" in text


def test_each_discrepancy_is_named():
    found = reconcile([early("st-a", 3, 2), early("st-b", 3, 3, "common"), day("st-d", 4, 4, (2, 1, 1))], [KAGA])
    assert found.problems == [
        "st-a: 3 voters checked in but 2 ballots",
        "st-d: 1 voter(s) checked in here had already voted at another place of the municipality (voted twice)",
        "st-d: 1 voter(s) checked in here are not on the municipal register",
        "kaga: 6 check-ins at its early/common places but 5 marks on the register",
    ], found.problems  # in all: 10 check-ins = 5 + 3 marks + 1 voted twice + 1 not registered
    two_back = MunicipalFigures("kaga", "closed", 100, early_marks=5, day_marks=2)
    lost = reconcile([early("st-a", 5, 5), day("st-d", 3, 3, (2, 0, 0))], [two_back])
    assert lost.problems == ["st-d: 3 check-ins but 2 marks sent back",
                             "kaga: 8 check-ins at its stations but 7 marks (with voters who voted twice and voters "
                             "not on the register)"]  # fmt: skip


def test_what_is_not_known_yet_is_pending_not_a_discrepancy():
    opened = MunicipalFigures("kaga", "open", 100, early_marks=7, day_marks=0)
    found = reconcile([early("st-a", None, None), day("st-d", 3, 3, None), StationFigures("st-x", None, "", 1, 1)],
                      [opened])  # fmt: skip
    assert found.problems == []
    text = "\n".join(found.text())
    assert "st-a (kaga, early): pending" in text and "marks not sent back yet" in text
    assert "st-x (not on the municipal roll): 1 check-ins, 1 ballots" in text
    assert "totals pending" in text


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(st.one_of(st.binary(max_size=200), st.dictionaries(st.sampled_from(["check_ins", "ballots", "x"]),
                 st.one_of(st.integers(-5, 2**70), st.booleans(), st.none(), st.text(max_size=3))).map(
                     lambda d: canonical_bytes(d) if all(type(v) is not int or abs(v) < 2**63 for v in d.values())
                     else b"{}")))  # fmt: skip
def test_closing_counts_never_raise(document: bytes):
    check_ins, ballots = closing_counts(document)
    for value in (check_ins, ballots):
        assert value is None or (type(value) is int and value >= 0)
