"""Measure the ONNX -> torch view against the ONNX project's own backend node tests.

``onnx.backend.test.case.node.collect_testcases(None)`` (shipped in the onnx wheel, nothing downloaded)
gives every node test: a model, its inputs and the expected outputs. Each case is run through the view
and ends in one of three outcomes:

* ``passed``: every output matches (the case's own rtol/atol, and the expected dtype);
* ``refused``: the view declined the graph up front (an operator it lacks, an attribute value or a tensor
  type outside its documented limits), with the reason;
* ``failed``: the view ran and was wrong, or crashed. A claimed operator must have none of these.

``python -m governance.testing.onnx_coverage`` prints the counts.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class CaseResult:
    name: str
    outcome: str  # passed | refused | failed
    ops: frozenset[str]
    reason: str = ""


@dataclass
class Coverage:
    results: list[CaseResult] = field(default_factory=list)

    def by_outcome(self, outcome: str) -> list[CaseResult]:
        return [r for r in self.results if r.outcome == outcome]

    def claimed_ops(self) -> list[str]:
        from governance.host.runtimes.onnx_torch import supported_operators

        return supported_operators()

    def op_counts(self) -> dict[str, Counter]:
        """Per claimed operator: how many cases that contain it passed / were refused / failed."""
        claimed = set(self.claimed_ops())
        out: dict[str, Counter] = {op: Counter() for op in claimed}
        for r in self.results:
            for op in r.ops & claimed:
                out[op][r.outcome] += 1
        return out

    def touching_claimed(self) -> list[CaseResult]:
        claimed = set(self.claimed_ops())
        return [r for r in self.results if r.ops & claimed]


def _op_name(node: Any) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


def _as_array(value: Any) -> Any:
    import onnx
    from onnx import numpy_helper

    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else value


def _to_torch(value: Any) -> Any:
    import torch

    arr = np.asarray(_as_array(value))
    return torch.from_numpy(arr.copy()) if arr.dtype != object else value


def _compare(got: Any, want: np.ndarray, rtol: float, atol: float) -> str | None:
    got_np = got.detach().cpu().numpy() if hasattr(got, "detach") else np.asarray(got)
    want = np.asarray(_as_array(want))
    if got_np.dtype != want.dtype:
        return f"dtype {got_np.dtype} != expected {want.dtype}"
    if got_np.shape != want.shape:
        return f"shape {got_np.shape} != expected {want.shape}"
    try:
        if want.dtype == bool or np.issubdtype(want.dtype, np.integer):
            np.testing.assert_array_equal(got_np, want)
        else:
            np.testing.assert_allclose(got_np.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=atol)
    except AssertionError as exc:
        diff = np.abs(got_np.astype(np.float64) - want.astype(np.float64))
        return f"max |diff| {np.nanmax(diff):.3g} (rtol {rtol}, atol {atol}): {str(exc).strip().splitlines()[3][:120]}"
    return None


def run_case(case: Any) -> CaseResult:
    """Run one backend node test case through the view."""
    import torch
    from onnx import numpy_helper

    from governance.host.runtimes.onnx_torch import GraphProgram, Unsupported

    model = case.model
    ops = frozenset(_op_name(n) for n in model.graph.node)
    if model.functions:
        return CaseResult(case.name, "refused", ops, "model-local functions are not supported")
    try:
        program = GraphProgram(model)
    except Unsupported as exc:
        return CaseResult(case.name, "refused", ops, str(exc))
    inits = {i.name: torch.from_numpy(np.array(numpy_helper.to_array(i))) for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in inits]
    outputs = [o.name for o in model.graph.output]
    for feeds, expected in case.data_sets:
        env = dict(inits)
        env.update({name: _to_torch(v) for name, v in zip(inputs, feeds)})
        try:
            with torch.no_grad():
                env, _ = program.run(env)
        except Exception as exc:  # a crash in a claimed graph is a failure, not a refusal
            return CaseResult(case.name, "failed", ops, f"{type(exc).__name__}: {str(exc)[:2000]}")
        for name, want in zip(outputs, expected):
            why = _compare(env[name], want, case.rtol, case.atol)
            if why:
                return CaseResult(case.name, "failed", ops, f"output {name}: {why}")
    return CaseResult(case.name, "passed", ops)


def measure() -> Coverage:
    """Run every backend node test case (about 1,900)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np_err = np.seterr(all="ignore")
        try:
            from onnx.backend.test.case.node import collect_testcases

            cases = collect_testcases(None)
            return Coverage([run_case(c) for c in cases])
        finally:
            np.seterr(**np_err)


def main() -> None:  # pragma: no cover - a report printer
    cov = measure()
    counts = Counter(r.outcome for r in cov.results)
    claimed = cov.claimed_ops()
    touching = cov.touching_claimed()
    print(f"node test cases: {len(cov.results)}  passed {counts['passed']}  refused {counts['refused']}  "
          f"failed {counts['failed']}")
    print(f"claimed operators: {len(claimed)}; cases containing one: {len(touching)} "
          f"(passed {sum(r.outcome == 'passed' for r in touching)}, "
          f"refused {sum(r.outcome == 'refused' for r in touching)}, "
          f"failed {sum(r.outcome == 'failed' for r in touching)})")
    for op, c in sorted(cov.op_counts().items()):
        print(f"  {op:<28} passed {c['passed']:4d}  refused {c['refused']:4d}  failed {c['failed']:4d}")
    for r in cov.by_outcome("failed"):
        print("FAILED", r.name, r.reason)


if __name__ == "__main__":  # pragma: no cover
    main()
