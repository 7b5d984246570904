"""No false alarms: every registry architecture at the tiny scale passes 100 examples per oracle in fp32.

The one exception is a real finding, expected here: transformers' generate() raises for
Falcon with ALiBi and a static cache. fuzzkv must report it as an `error` finding
(shrunk to the smallest case), not crash.
"""

import pytest

from fuzzkv import registry
from fuzzkv.oracles import ORACLES
from tests.conftest import fuzz

KNOWN_FINDINGS = {("falcon-rw", "generate")}


@pytest.mark.slow
@pytest.mark.nightly  # 13 models x 6 oracles x 150 examples: about 15 CPU-minutes
@pytest.mark.parametrize("model", registry.names())
def test_registry_model_at_tiny_scale_has_no_false_failure(model):
    # 150 Hypothesis examples give at least 100 distinct cases per oracle (some draws repeat a case). How many
    # repeat varies with the process: Hypothesis's target() climbs differences whose last bits differ between
    # processes (bloom-560m's cache-reuse: 97 distinct of 125 alone under pytest, 114 in a script, same seed).
    finished, recorder, _ = fuzz(model, max_examples=150)
    for done in recorder.of("OracleFinished"):
        if (model, done.oracle) not in KNOWN_FINDINGS:  # a search that found a bug stops early
            assert done.examples >= 100, (done.oracle, done.examples)
    assert len(recorder.of("OracleFinished")) == len([o for o in ORACLES.values() if "hf" in o.lanes and o.default])
    unexpected = [f.verdict.summary() for f in finished.failures
                  if (model, f.verdict.oracle) not in KNOWN_FINDINGS]
    assert unexpected == []


def test_falcon_alibi_static_generate_error_is_a_finding_not_a_crash():
    finished, _, store = fuzz("falcon-rw", oracles=("generate",), max_examples=30)
    [failure] = finished.failures
    verdict = failure.verdict
    assert verdict.kind == "error" and dict(verdict.case.settings)["cache_implementation"] == "static"
    assert "generate path raised" in verdict.error
    # Shrunk to the smallest case that shows it: one one-token prompt, one new token.
    assert verdict.case.prompts == ((0,),) and verdict.case.max_new_tokens == 1
    assert [r.kind for r in store.failures()] == ["error"]
