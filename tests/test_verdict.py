"""compare() turns two logit tensors into the numbers a verdict reports."""

import math
from dataclasses import replace

import torch

from fuzzkv.case import Case
from fuzzkv.comparison import compare
from fuzzkv.verdict import Bounds, Verdict


def _logits():
    torch.manual_seed(0)
    return torch.randn(2, 5, 11) * 3


def test_identical_logits_have_zero_difference():
    ref = _logits()
    m = compare(ref, ref.clone(), torch.ones(2, 5, dtype=torch.bool), Bounds(1e-4))
    assert m.max_abs_diff == 0 and m.first_bad_position is None and m.greedy_divergence_step is None
    assert m.positions_compared == 10


def test_first_bad_position_is_the_earliest_over_tolerance():
    ref = _logits()
    cand = ref.clone()
    cand[1, 3, 4] += 0.5
    cand[0, 4, 0] += 0.7
    m = compare(ref, cand, torch.ones(2, 5, dtype=torch.bool), Bounds(0.1))
    assert (m.first_bad_row, m.first_bad_position) == (1, 3)
    assert math.isclose(m.max_abs_diff, 0.7, rel_tol=1e-5)


def test_unchecked_positions_are_ignored():
    ref = _logits()
    cand = ref.clone()
    cand[0, 0] += 100
    checked = torch.ones(2, 5, dtype=torch.bool)
    checked[0, 0] = False
    assert compare(ref, cand, checked, Bounds(0.1)).max_abs_diff == 0


def test_nan_in_one_path_only_is_an_infinite_difference():
    ref = _logits()
    cand = ref.clone()
    cand[0, 2, 1] = float("nan")
    assert compare(ref, cand, torch.ones(2, 5, dtype=torch.bool), Bounds(1.0)).max_abs_diff == math.inf


def test_nan_in_both_paths_is_the_same_answer():
    ref = _logits()
    ref[0, 2, 1] = float("nan")
    assert compare(ref, ref.clone(), torch.ones(2, 5, dtype=torch.bool), Bounds(1.0)).max_abs_diff == 0


def test_greedy_divergence_reports_the_reference_margin():
    ref = torch.zeros(1, 2, 3)
    ref[0, 1] = torch.tensor([1.0, 0.9, 0.0])
    cand = ref.clone()
    cand[0, 1, 1] = 1.05  # flips the argmax by less than the tolerance: rounding, not a bug
    m = compare(ref, cand, torch.ones(1, 2, dtype=torch.bool), Bounds(0.2))
    assert m.greedy_divergence_step == 1
    assert math.isclose(m.top2_margin, 0.1, rel_tol=1e-5)
    assert m.max_abs_diff < 0.2


def test_score_is_difference_over_tolerance():
    ref = _logits()
    cand = ref + 0.5
    m = compare(ref, cand, torch.ones(2, 5, dtype=torch.bool), Bounds(0.1))
    verdict = Verdict("decode", Case(prompts=((1,),)), "mismatch", 0.1, metrics=m)
    assert math.isclose(verdict.score, 5.0, rel_tol=1e-4)
    assert "0.5 > tolerance 0.1" in verdict.summary()


def test_a_summary_says_greater_only_where_a_difference_exceeds_its_bound():
    """The sign between a difference and its bound is the truth (#32: a pass read "rms |diff| 1.1e-06 > rms
    tolerance 6.74e-06")."""
    ref, everywhere = _logits().double(), torch.ones(2, 5, dtype=torch.bool)  # exact offsets

    def summary(kind, candidate, bounds):
        return Verdict("decode", Case(prompts=((1,),)), kind, bounds.value,
                       metrics=compare(ref, candidate, everywhere, bounds)).summary()

    passed = summary("pass", ref + 1e-6, Bounds(1e-4, rms=6.74e-6))
    assert "rms |diff| 1e-06 <= rms tolerance 6.74e-06" in passed and ">" not in passed
    assert ">" not in summary("pass", ref + 1e-6, Bounds(1e-4))  # no RMS bound: the largest difference's line
    # Past the RMS bound only: the RMS line says ">", the largest difference stays within its tolerance.
    assert "rms |diff| 5e-05 > rms tolerance 6.74e-06" in summary("mismatch", ref + 5e-5, Bounds(1e-4, rms=6.74e-6))
    assert "max |diff| 0.001 > tolerance 0.0001" in summary("mismatch", ref + 1e-3, Bounds(1e-4, rms=6.74e-6))


def _trace(logits):
    from fuzzkv.backends.interface import Trace

    tokens = torch.zeros(logits.shape[0], logits.shape[1] + 1, dtype=torch.long)
    return Trace.everywhere(tokens, torch.ones_like(tokens), logits)


def test_a_comparison_with_its_own_bounds_is_judged_by_them_and_never_below_the_runs():
    """A lossy surface (the quantized cache) carries its calibrated bounds: within them it passes though far past the
    run's rounding tolerance; past them it is a mismatch reported at its own bound; a comparison without its own
    bounds in the same oracle is still held to the run's."""
    from fuzzkv.oracles import ORACLES, Comparison
    from fuzzkv.oracles.check import check

    ref = _logits()
    lossy, exact = ref + 0.3, ref.clone()
    oracle = ORACLES["quantized"]

    def pairs(comparisons):
        nonlocal oracle
        oracle = replace(ORACLES["quantized"], comparisons=lambda subject, case: comparisons)

    class Lane:
        subject = None

        def precise_subject(self):
            return None

        def release_precise(self):
            pass

    case, run_bounds = Case(prompts=((1, 2),)), Bounds(1e-4)
    pairs([Comparison("loss", _trace(ref), _trace(lossy), Bounds(0.5)), Comparison("rows", _trace(ref), _trace(exact))])
    assert check(oracle, Lane(), case, run_bounds).kind == "pass"
    pairs([Comparison("loss", _trace(ref), _trace(lossy), Bounds(0.1))])
    verdict = check(oracle, Lane(), case, run_bounds)
    assert verdict.kind == "mismatch" and verdict.comparison == "loss" and verdict.tolerance == 0.1
    assert verdict.own_bounds  # the reproduction script judges this comparison by its own bound
    pairs([Comparison("loss", _trace(ref), _trace(lossy), Bounds(0.5)), Comparison("rows", _trace(ref), _trace(ref + 1e-3))])
    assert check(oracle, Lane(), case, run_bounds).comparison == "rows"
    pairs([Comparison("loss", _trace(ref), _trace(ref + 1e-5), Bounds(0.0))])  # never below the run's rounding
    assert check(oracle, Lane(), case, run_bounds).kind == "pass"


def test_a_comparison_of_one_value_per_position_is_not_held_to_the_vocabulary_rms_bound():
    """Continuous batching returns one log-prob per position: its 'RMS over the vocabulary' is the difference
    itself, so only the largest-difference bound applies (a false alarm on cohere, 1.04x the RMS bound)."""
    from fuzzkv.oracles import ORACLES, Comparison
    from fuzzkv.oracles.check import check

    ref = _logits()[..., :1]
    run_bounds = Bounds(1e-3, rms=1e-4)

    def giving(shift):
        return replace(ORACLES["continuous-batching"],
                       comparisons=lambda subject, case: [Comparison("log-probs", _trace(ref), _trace(ref + shift))])

    class Lane:
        subject = None

        def precise_subject(self):
            return None

        def release_precise(self):
            pass

    assert check(giving(5e-4), Lane(), Case(prompts=((1, 2),)), run_bounds).kind == "pass"
    assert check(giving(5e-3), Lane(), Case(prompts=((1, 2),)), run_bounds).kind == "mismatch"
