"""A Case is a frozen, JSON-serialisable value."""

import dataclasses

import pytest
from hypothesis import given

from fuzzkv.case import Case
from fuzzkv.strategies import CaseSpace, cases

SPACE = CaseSpace(vocab_size=50, special_ids=(0, 1, 2), sliding_windows=(4,), max_positions=32)


@given(cases(SPACE, reuse=True))
def test_json_round_trip_is_identity(case):
    assert Case.from_json(case.to_json()) == case
    assert hash(Case.from_dict(case.to_dict())) == hash(case)


def test_case_is_frozen():
    case = Case(prompts=((1, 2),))
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.max_new_tokens = 3


def test_defaults_to_a_single_prefill_chunk():
    assert Case(prompts=((1, 2, 3), (4,))).prefill_chunks == (3,)


@pytest.mark.parametrize("bad", [
    {"prompts": []},
    {"prompts": [[]]},
    {"prompts": [[1]], "padding_side": "middle"},
    {"prompts": [[1]], "cache": "paged"},
    {"prompts": [[1]], "max_new_tokens": 0},
    {"prompts": [[1, 2]], "prefill_chunks": [1]},
    {"prompts": [[1, 2]], "prefill_chunks": [3, -1]},
])
def test_malformed_cases_are_rejected(bad):
    with pytest.raises((ValueError, TypeError)):
        Case.from_dict(bad)


def test_describe_names_the_shape():
    case = Case(prompts=((1,), (2, 3)), padding_side="right", max_new_tokens=2, prefill_chunks=(1, 1))
    assert case.describe() == ("batch 2 (lengths 1,2), right-padded, 2 new token(s), prefill chunks [1, 1], "
                               "dynamic cache, float32")
