"""The torch view against the ONNX project's own backend node tests (shipped in the onnx wheel): every
case that contains a claimed operator either passes or is refused up front with a reason; none is wrong.
An operator that has node tests is claimed only if at least one of its cases passes."""

from __future__ import annotations

from collections import Counter

import pytest

from governance.testing.onnx_coverage import measure

#: ai.onnx.ml operators the ONNX node tests do not cover: checked against ONNX Runtime in test_onnx_ml_ops.py
NO_NODE_TESTS = {"ai.onnx.ml::LinearClassifier", "ai.onnx.ml::LinearRegressor", "ai.onnx.ml::Normalizer",
                 "ai.onnx.ml::Scaler", "ai.onnx.ml::ZipMap"}


@pytest.fixture(scope="module")
def coverage():
    return measure()


def test_no_case_of_a_claimed_operator_is_wrong(coverage):
    failed = [(r.name, r.reason) for r in coverage.touching_claimed() if r.outcome == "failed"]
    assert not failed, failed[:10]


def test_every_claimed_operator_passes_somewhere(coverage):
    counts = coverage.op_counts()
    never = sorted(op for op, c in counts.items() if c["passed"] == 0 and op not in NO_NODE_TESTS)
    assert not never, f"claimed but no passing node test: {never}"
    assert all(sum(counts[op].values()) == 0 for op in NO_NODE_TESTS)  # else move it out of NO_NODE_TESTS
    outcomes = Counter(r.outcome for r in coverage.results)
    assert len(coverage.results) > 1800 and outcomes["passed"] >= 900  # 933 when written


def test_refusals_name_their_reason(coverage):
    refused = [r for r in coverage.touching_claimed() if r.outcome == "refused"]
    assert refused and all(r.reason for r in refused)
    layer_norm = [r for r in coverage.results if "LayerNormalization" in r.ops]
    assert sum(r.outcome == "passed" for r in layer_norm) >= 10
