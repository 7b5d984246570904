"""Strategies stay inside the model's space and shrink toward the simplest case."""

from hypothesis import find, given, settings

from fuzzkv.case import Case
from fuzzkv.strategies import CaseSpace, cases, lengths, prefill_chunks, prompts

SPACE = CaseSpace(vocab_size=100, special_ids=(3, 7), max_batch=4, max_prompt_len=6, max_new_tokens=5,
                  max_positions=40, sliding_windows=(8,))


@given(cases(SPACE))
def test_cases_fit_the_space(case):
    assert 1 <= case.batch_size <= SPACE.max_batch
    assert case.total_length <= SPACE.max_positions
    assert all(0 <= t < SPACE.vocab_size for p in case.prompts for t in p)
    assert sum(case.prefill_chunks) == case.padded_length
    assert case.max_new_tokens <= SPACE.max_new_tokens


def test_everything_shrinks_to_the_simplest_case():
    simplest = find(cases(SPACE), lambda c: True)
    assert simplest == Case(prompts=((0,),), max_new_tokens=1, prefill_chunks=(1,), cache="dynamic",
                            padding_side="left")


def test_boundary_lengths_are_reachable_past_the_prompt_cap():
    # Sliding window 8: lengths 7, 8, 9 are drawn although max_prompt_len is 6.
    for boundary in (7, 8, 9):
        assert find(lengths(SPACE), lambda n, b=boundary: n == b) == boundary


def test_position_limit_is_a_boundary():
    space = CaseSpace(vocab_size=10, max_positions=20, max_prompt_len=4)
    assert find(cases(space), lambda c: c.total_length == 20).total_length == 20


def test_batch_oracle_space_shrinks_to_two_rows():
    assert find(cases(SPACE, min_batch=2), lambda c: True).batch_size == 2


def test_chunk_schedules_cover_the_prompt_and_shrink_to_one_chunk():
    assert find(prefill_chunks(9), lambda c: True) == (9,)
    found = find(prefill_chunks(9), lambda c: len(c) >= 3)
    assert sum(found) == 9 and len(found) == 3


def test_special_ids_are_drawn():
    found = find(prompts(SPACE), lambda p: 7 in p)
    assert found == (7,)


@settings(max_examples=30)
@given(cases(SPACE, reuse=True))
def test_static_reuse_keeps_the_batch_and_dynamic_reuse_may_grow(case):
    if case.cache == "static":
        assert case.reuse_batch == case.batch_size
    else:
        assert case.batch_size <= case.reuse_batch <= case.batch_size + SPACE.max_batch
