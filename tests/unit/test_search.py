"""The search finds a planted bug and shrinks it to the smallest case that shows it; the clean fake passes that
case, and the case just below it passes on the broken fake (so the shape asserted is the bug's own minimum)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fuzzkv.backends.lanes import BackendLane
from fuzzkv.case import Case
from fuzzkv.config import RunConfig
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check
from fuzzkv.runner import case_space
from fuzzkv.search import Search
from fuzzkv.verdict import Bounds, Verdict
from tests.fake_backend import LONG_SEQUENCE, FakeBackend
from tests.unit.conftest import fuzz_fake

BOUNDS = Bounds(1e-4)  # far above the clean fake's rounding, far below any planted bug


def search(bugs: tuple[str, ...], oracle: str, max_examples: int = 60) -> tuple[list[Verdict], list[Verdict]]:
    """(the shrunk failures, every failing verdict seen on the way) of one seeded search."""
    lane = BackendLane(FakeBackend(bugs))
    seen: list[Verdict] = []
    found = Search(ORACLES[oracle], lane, BOUNDS, budget=None, on_example=lambda *_: None,
                   on_failure=seen.append).execute(case_space(RunConfig(model="fake", db_url="memory:"), lane),
                                                   max_examples=max_examples, seed_value=0, database=None)
    return found, seen


def passes(bugs: tuple[str, ...], oracle: str, case: Case) -> bool:
    return check(ORACLES[oracle], BackendLane(FakeBackend(bugs)), case, BOUNDS).kind == "pass"


def prompts_of_length(case: Case, *lengths: int) -> Case:
    return replace(case, prompts=tuple((3,) * n for n in lengths), prefill_chunks=(), continuation=())


@pytest.mark.parametrize("bug, oracle, minimal, just_below", [
    # one cached step: a sequence of three tokens (one prompt token and two new, or two prompt tokens in two chunks)
    ("positions-off-by-one", "decode", lambda c: c.batch_size == 1 and c.total_length == 3,
     lambda c: Case(prompts=((3,),), max_new_tokens=1)),
    # a padded pair: the padding mask matters only where a row has padding
    ("row-mask-ignored", "decode", lambda c: sorted(map(len, c.prompts)) == [1, 2],
     lambda c: prompts_of_length(c, 2, 2)),
    # three rows of one token, one cached step; two rows pass
    ("batch-of-three", "decode", lambda c: [len(p) for p in c.prompts] == [1, 1, 1] and c.total_length == 3,
     lambda c: replace(c, prompts=c.prompts[:2], continuation=c.continuation[:2])),
    # the first length past the threshold: the last step of LONG_SEQUENCE + 2 tokens reads LONG_SEQUENCE cached ones
    ("past-long-sequence", "decode", lambda c: c.batch_size == 1 and c.total_length == LONG_SEQUENCE + 2,
     lambda c: Case(prompts=((3,) * LONG_SEQUENCE,), max_new_tokens=1)),
    # any reuse shows it: one row, one token, one new token, a cache that served one row before
    ("stale-after-reset", "cache-reuse",
     lambda c: (c.prompts, c.max_new_tokens, c.reuse_batch, c.prefill_chunks) == (((c.prompts[0][0],),), 1, 1, (1,)),
     None),
], ids=["positions-off-by-one", "row-mask-ignored", "batch-of-three", "past-long-sequence", "stale-after-reset"])
def test_a_planted_bug_shrinks_to_its_minimal_case(bug, oracle, minimal, just_below):
    [found], seen = search((bug,), oracle)
    case = found.case
    assert found.kind == "mismatch" and minimal(case), case.describe()
    assert len(seen) > 1 and case in [v.case for v in seen]  # it was shrunk, from a larger failing case
    assert passes((), oracle, case)  # the clean fake passes the minimal case
    if just_below is not None:
        assert passes((bug,), oracle, just_below(case))


def test_a_clean_fake_gives_the_search_nothing_to_shrink():
    for oracle in ("decode", "batch", "chunked", "cache-reuse", "generate"):
        found, seen = search((), oracle, max_examples=40)
        assert found == [] and seen == [], oracle


def test_a_search_checks_as_many_distinct_cases_as_asked_though_hypothesis_draws_some_twice():
    # The fake's case space is small: Hypothesis reaches a case twice through other choices. Each is checked once
    # and counted once, and the search draws a little more so that asked-for 20 means 20 cases checked.
    finished, events, _ = fuzz_fake(oracles=("decode",), max_examples=20, tolerance=1e-3)
    [done] = events.of("OracleFinished")
    assert done.examples == 20 and done.incomplete is None
