"""The fake backend itself: clean, its paths agree to rounding; each planted bug shows only where its kind does.
The rest of the tier trusts it, so it is checked here first."""

from __future__ import annotations

import pytest
import torch

from fuzzkv.backends.interface import Backend
from fuzzkv.backends.lanes import BackendLane
from fuzzkv.case import Case
from fuzzkv.config import RunConfig, backend_option_for
from fuzzkv.errors import UsageError
from fuzzkv.oracles import ORACLES
from fuzzkv.oracles.check import check
from fuzzkv.verdict import Bounds
from tests.fake_backend import LONG_SEQUENCE, FakeBackend

BOUNDS = Bounds(1e-4)  # far above the clean fake's rounding (about 1e-6), far below any planted bug (0.1 and more)


def verdict(bugs: tuple[str, ...], oracle: str, case: Case) -> str:
    return check(ORACLES[oracle], BackendLane(FakeBackend(bugs)), case, BOUNDS).kind


def test_clean_paths_agree_to_float32_rounding_and_closer_in_float64():
    case = Case(prompts=((3, 4, 5, 6, 7), (8, 9)), max_new_tokens=4, prefill_chunks=(2, 3),
                continuation=((10, 11, 12, 13), (14, 15, 16, 17)))

    def cached_vs_uncached(backend: Backend) -> tuple[float, torch.dtype]:
        cached = backend.cached(case)
        uncached = backend.reference(cached.tokens, cached.attention_mask)
        return float((cached.logits.double() - uncached)[cached.checked].abs().max()), cached.logits.dtype

    backend = FakeBackend()
    precise = backend.precise_view()
    assert precise is not None
    rounding, dtype = cached_vs_uncached(backend)
    assert 0 < rounding < 1e-5 and dtype == torch.float32  # the two paths sum in different orders: rounding
    rounding, dtype = cached_vs_uncached(precise)
    assert rounding < 1e-12 and dtype == torch.float64  # which shrinks by orders of magnitude in float64
    assert float(backend.cached(case).logits.abs().max()) > 1  # logits worth comparing, not all near zero


ONE_STEP = Case(prompts=((3,),), max_new_tokens=2)  # one decoding step reads the cache
NO_STEP = Case(prompts=((3,),), max_new_tokens=1)  # nothing reads the cache


@pytest.mark.parametrize("bug, oracle, shows, hides", [
    ("positions-off-by-one", "decode", ONE_STEP, ("decode", NO_STEP)),
    ("cached-key-dropped", "decode", Case(prompts=((3, 4),), max_new_tokens=2), ("decode", NO_STEP)),
    ("logit-offset-5pct", "decode", ONE_STEP, ("decode", NO_STEP)),
    # the padding mask matters only for a padded row
    ("row-mask-ignored", "decode", Case(prompts=((3,), (4, 5)), max_new_tokens=2),
     ("decode", Case(prompts=((3, 4), (5, 6)), max_new_tokens=2))),
    ("batch-of-three", "decode", Case(prompts=((3,),) * 3, max_new_tokens=2),
     ("decode", Case(prompts=((3,),) * 2, max_new_tokens=2))),
    # the last step of a sequence of LONG_SEQUENCE + 2 tokens reads a cache of LONG_SEQUENCE
    ("past-long-sequence", "decode", Case(prompts=((3,),), max_new_tokens=LONG_SEQUENCE + 1),
     ("decode", Case(prompts=((3,),), max_new_tokens=LONG_SEQUENCE))),
    # only a cache that was reset shows it: the same case on a fresh cache does not
    ("stale-after-reset", "cache-reuse", Case(prompts=((3,),), max_new_tokens=2, reuse_batch=2),
     ("decode", Case(prompts=((3,),), max_new_tokens=2))),
])
def test_each_planted_bug_shows_only_where_its_kind_of_bug_shows(bug, oracle, shows, hides):
    assert verdict((bug,), oracle, shows) == "mismatch"
    assert verdict((bug,), *hides) == "pass"
    assert verdict((), oracle, shows) == "pass"  # the clean fake passes the same case


def test_the_fake_is_no_backend_a_user_can_ask_for():
    with pytest.raises(UsageError, match="unknown backend 'fake'"):
        RunConfig(model="fake", backend="fake")
    assert backend_option_for("fake") is None  # replay cannot rebuild it either
    with pytest.raises(ValueError, match="no such fake bug: typo"):
        FakeBackend(("typo",))
    backend = FakeBackend(("positions-off-by-one",))
    assert backend.name == backend.info.name == "fake" and "a test double for fuzzkv itself, not a model" in backend.info.source
    assert "positions-off-by-one" in backend.info.source
    script = backend.reproduction("decode", "", ONE_STEP, BOUNDS)
    assert script.startswith("# fuzzkv reproduction on the FAKE backend: a test double")


def test_canary_mutants_add_their_bug_and_keep_the_backends_own():
    backend = FakeBackend(("batch-of-three",))
    mutant = backend.mutant("cached-key-dropped", 7.0)
    assert isinstance(mutant, FakeBackend) and mutant.bugs == {"batch-of-three", "cached-key-dropped"}
    assert mutant.logit_scale == 7.0 and backend.mutant("no-such-canary", 7.0) is None
    precise = mutant.precise_view()
    assert isinstance(precise, FakeBackend) and precise.bugs == mutant.bugs and precise.dtype == torch.float64
    assert backend.precise_view(attn="sdpa") is None  # one attention implementation only
