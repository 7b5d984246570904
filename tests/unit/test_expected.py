"""The expected table: tie-order divergences of an unspecified operation are expected, with evidence that holds."""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path

import pytest

from fuzzkv.case import Case
from fuzzkv.expected import EXPECTED, expected_reason


def test_a_top_k_tie_order_divergence_is_expected_for_the_models_that_show_it_and_for_no_other():
    case = Case(prompts=((1, 2, 3),)).to_dict()
    for model_type in ("deepseek_v32", "glm_moe_dsa", "deepseek_v4", "hy_v4", "axk2", "dots3_note_text", "doge"):
        reason = expected_reason(model_type, "decode", case) or ""
        assert "torch.topk breaks an exact tie" in reason and "not guaranteed to be stable" in reason, model_type
    assert expected_reason("llama", "decode", case) is None and expected_reason("deepseek_v3", "batch", case) is None


def test_each_source_line_named_as_evidence_holds_in_the_release_it_names():
    # "path/in/the/library.py:LINE `code` (VERSION)": where that release is installed, the line has that code.
    installed = metadata.version("transformers")
    spec = importlib.util.find_spec("transformers")
    assert spec is not None and spec.origin is not None
    library, checked = Path(spec.origin).parent, 0
    for entry in EXPECTED:
        for path, line, code, version in re.findall(r"([\w/]+\.py):(\d+) `([^`]+?)(?:\.\.\.)?\)?`.*?\(([\d., ]+)\)",
                                                    entry.evidence):
            if installed not in version.split(", "):
                continue
            source = (library / path.removeprefix("transformers/")).read_text(encoding="utf-8").splitlines()
            fragment = code.split("(")[0].strip()
            assert fragment in source[int(line) - 1], (entry.model_type, path, line, fragment)
            checked += 1
    if checked == 0:
        pytest.skip(f"no evidence names transformers {installed}")


def test_a_pad_id_fed_as_text_is_expected_only_for_fairseq_style_positions_and_only_where_a_row_holds_it():
    with_pad = {"prompts": [[2, 1]], "continuation": []}
    without = {"prompts": [[2, 0]], "continuation": [[3, 4]]}
    in_continuation = {"prompts": [[2]], "continuation": [[1, 0, 0]]}
    assert expected_reason("m2m_100", "decode", with_pad) and expected_reason("speech_to_text", "chunked", in_continuation)
    assert expected_reason("m2m_100", "decode", without) is None and expected_reason("bart", "decode", with_pad) is None
