"""fuzzkv finds deliberately broken caches and shrinks each failure to its minimal shape.

The broken models live in tests/broken_models.py and load through the factory form, as a
user's own modified model would.
"""

import pytest

from tests.conftest import fuzz
from tests.known_bugs import reset_keeps_keys_reason

BUDGET = 60  # examples: each bug must be found within this many, then shrunk


def only_failure(finished, oracle):
    failures = [f.verdict for f in finished.failures]
    assert [v.oracle for v in failures] == [oracle], [v.summary() for v in failures]
    return failures[0]


def first_failure_at(recorder, oracle):
    [done] = [e for e in recorder.of("OracleFinished") if e.oracle == oracle]
    return done.first_failure_at


def test_off_by_one_positions_shrinks_to_one_token_and_one_decode_step():
    finished, recorder, _ = fuzz("tests.broken_models:off_by_one_positions", oracles=("decode",), max_examples=BUDGET)
    verdict = only_failure(finished, "decode")
    assert verdict.kind == "mismatch"
    assert first_failure_at(recorder, "decode") <= BUDGET
    # Minimal: one prompt of one token, and the first decode step is where it breaks.
    assert verdict.case.prompts == ((0,),) and verdict.case.max_new_tokens == 2
    assert verdict.metrics.first_bad_position == 1


def test_dropped_padding_mask_needs_exactly_two_rows_of_different_length():
    # Five seeds: seed 0 draws no left-padded batch of unequal rows in 60 examples on these weights (its search
    # spends them climbing rounding noise on right-padded and one-row cases: a known weakness of the targeting),
    # the others find the bug within 10. Every one that finds it shrinks it to the same minimal case.
    found = []
    for seed in range(5):
        finished, _, _ = fuzz("tests.broken_models:mask_dropped_when_cached", oracles=("decode",),
                              max_examples=BUDGET, seed=seed)
        if finished.failures:
            found.append(only_failure(finished, "decode").case)
    assert len(found) >= 4
    for case in found:
        assert case.batch_size == 2
        assert sorted(len(p) for p in case.prompts) == [1, 2]  # one padding slot is enough
        # Left-padded, and the first cached call (a decode step, or a second prefill chunk) already reads the pad.
        assert case.padding_side == "left" and len(case.prefill_chunks) + case.max_new_tokens == 3


def test_batch_of_three_bug_shrinks_to_exactly_three_rows():
    # Batches of 2 or 3 rows: the search must find the one size that breaks and not shrink below it.
    finished, _, _ = fuzz("tests.broken_models:batch_of_three", oracles=("batch",), max_examples=BUDGET, max_batch=3)
    case = only_failure(finished, "batch").case
    assert case.batch_size == 3
    assert sum(len(p) for p in case.prompts) == 4  # three one-token rows would need no padding: one row has two
    assert case.max_new_tokens == 2


def test_past_long_sequence_bug_shrinks_to_the_first_length_that_breaks():
    from tests.broken_models import LONG_SEQUENCE

    finished, _, _ = fuzz("tests.broken_models:past_long_sequence", oracles=("decode",), max_examples=BUDGET)
    case = only_failure(finished, "decode").case
    assert case.batch_size == 1
    # The cache must hold more than LONG_SEQUENCE tokens before a decode step: no shorter case fails.
    assert case.padded_length + case.max_new_tokens - 1 == LONG_SEQUENCE + 2


@pytest.mark.parametrize("oracle", ["decode", "batch", "chunked", "cache-impl", "cache-reuse", "generate"])
def test_the_clean_twin_passes_every_oracle(oracle):
    finished, _, _ = fuzz("tests.broken_models:clean", oracles=(oracle,), max_examples=40)
    if oracle == "cache-reuse" and reset_keeps_keys_reason():
        # The release's own DynamicCache.reset() bug: found on the dynamic cache, never on the static one.
        assert finished.failures and {f.verdict.case.cache for f in finished.failures} == {"dynamic"}, \
            [f.verdict.summary() for f in finished.failures]
        return
    assert finished.failures == []


def test_a_static_cache_bug_is_found_through_generate_with_the_static_implementation():
    # The same planted bug the cache-impl oracle finds by driving a StaticCache directly, found here through the
    # library's generate(cache_implementation="static"), on every version CI installs (4.x included).
    finished, _, _ = fuzz("tests.broken_models:static_cache_off_by_one", oracles=("generate",), max_examples=BUDGET)
    verdict = only_failure(finished, "generate")
    assert verdict.kind == "mismatch" and dict(verdict.case.settings)["cache_implementation"] == "static"
    assert verdict.case.batch_size == 1


def test_a_cache_that_is_stale_after_reset_is_found_by_cache_reuse_on_every_release():
    # Before transformers 4.56 only a static cache can be reset (for its own batch size): cache-reuse draws it alone
    # there, and the planted bug (any reused cache decodes one position off) is found through it.
    reason = reset_keeps_keys_reason()
    if reason:  # the release's own reset() bug is what cache-reuse finds and shrinks there (tests/test_findings.py)
        pytest.skip(reason)
    finished, _, _ = fuzz("tests.broken_models:stale_after_reset", oracles=("cache-reuse",), max_examples=BUDGET)
    verdicts = [f.verdict for f in finished.failures]
    assert verdicts and {v.oracle for v in verdicts} == {"cache-reuse"}, [v.summary() for v in verdicts]
    shrunk = [v for v in verdicts if v.kind == "mismatch" and v.case.prompts == ((0,),)]
    assert shrunk and all(v.case.max_new_tokens == 2 for v in shrunk), [v.summary() for v in verdicts]
