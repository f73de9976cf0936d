"""Spectral surrogate (SpecXAI-inspired reconstruction): a global Chebyshev expansion of the network.

The paper (Druc et al., arXiv 2302.09949) could only be read as far as its abstract; this implements the
reconstruction of methods-specxai-neflag.md Part B: the coefficients of the network's input->output map
in a tensor-product Chebyshev basis on a box, obtained from forward passes only, turned into (i) a
spectrum (energy per total degree), (ii) Sobol-type shares per input, and (iii) a formula a person can read:
the fewest terms that explain a stated share of the variance, in the coordinates' own units, with its
fidelity to the network measured on held-out points and compared with controls.

One explain call: prepare (problem.py) -> fit and sparsify (surrogate.py) -> score on held-out box points and
dataset rows (scoring.py) -> randomised-weights control (controls.py) -> readable formulas (readable.py) ->
metrics, tables, figures (report.py) -> controls of the headline figures -> words (texts.py).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from governance import Explanation, Method, MethodContext, Requirement
from governance.errors import MethodError

from governance_plugins.spectral import controls as C
from governance_plugins.spectral import fit as F
from governance_plugins.spectral import report as RP
from governance_plugins.spectral import texts as T
from governance_plugins.spectral.config import SpectralConfig
from governance_plugins.spectral.problem import Problem, fit, prepare
from governance_plugins.spectral.readable import BoxMap, ReadableFormula, readable_formula
from governance_plugins.spectral.result import Analysis, FormulaScores, Result
from governance_plugins.spectral.scoring import score
from governance_plugins.spectral.surrogate import Surrogate, build_surrogate

RECONSTRUCTION_NOTE = RP.RECONSTRUCTION_NOTE
__all__ = ["SpectralSurrogate", "SpectralConfig", "Problem", "RECONSTRUCTION_NOTE"]


class SpectralSurrogate(Method):
    name = "spectral"
    version = "1.1.0"
    title = "Spectral surrogate (SpecXAI-inspired reconstruction)"
    description = (
        "Expands the whole network, seen only through forward passes, in a tensor-product Chebyshev basis of its "
        "inputs on a data box. The coefficients give the network's spectrum (how much of its behaviour is "
        "linear, quadratic, cubic), each input's share of the output variance, and a readable formula (the "
        "fewest terms for a stated share of the variance, in the inputs' own units), with its fidelity to the "
        "network measured on held-out inputs and compared with controls.")
    reference = ("Druc, Wooldridge, Krishnamurthy, Sarkar, Balu: SpecXAI - Spectral interpretability of Deep "
                 "Learning Models, arXiv:2302.09949 (2023); implemented as the reconstruction of "
                 "methods-specxai-neflag.md Part B")
    requires = frozenset({Requirement.FORWARD})
    Config = SpectralConfig
    report_template = "governance_plugins.spectral:section.html.j2"

    @classmethod
    def can_explain(cls, *, model: Any, data: Any) -> str | None:
        why = super().can_explain(model=model, data=data)
        if why:
            return why
        if len(data) < 2:
            return "needs at least 2 data rows to set the input box"
        return None

    # the two steps the benchmark times on their own
    prepare = staticmethod(prepare)
    fit = staticmethod(fit)

    def explain(self, ctx: MethodContext, **kwargs: Any) -> Explanation:
        t0 = time.perf_counter()
        result = self.compute(ctx)
        ctx.progress(0.9, "report")
        e = Explanation(method=self.name, metrics=RP.metrics(result), arrays=RP.arrays(result),
                        figures=RP.figures(ctx, result), tables=RP.tables(result), details=RP.details(result))
        C.add_fidelity_controls(e, result.scores, result.randomised, result.problem.p, ctx.rng)
        C.add_formula_controls(e, result.formulas, result.scores, result.surrogate, ctx.rng)
        e.summary, e.findings, e.warnings = T.summary(e, result), T.findings(e, result), T.warnings(e, result)
        ctx.progress(1.0, f"done in {time.perf_counter() - t0:.1f} s")
        return e

    @staticmethod
    def compute(ctx: MethodContext) -> Result:
        """Every number of the explanation: fit, scores, control fit and readable formulas."""
        cfg: SpectralConfig = ctx.config  # type: ignore[assignment]
        pb = prepare(ctx)
        K = ctx.model.n_outputs
        data = ctx.data
        out_names = (list(data.class_names) if data.class_names and len(data.class_names) == K
                     else [f"output {k}" for k in range(K)])
        _shown_outputs(cfg, K)  # a bad `classes` fails before any model evaluation is spent on the fit
        ctx.progress(0.1, f"fitting {len(pb.alpha)} terms")
        surrogate = build_surrogate(pb, out_names)
        if surrogate.coef.shape[0] != K:  # the output spec can leave the size open (dynamic shapes): trust the fit
            K = surrogate.coef.shape[0]
            out_names = (list(data.class_names) if data.class_names and len(data.class_names) == K
                         else [f"output {k}" for k in range(K)])
        ctx.progress(0.6, "measuring fidelity")
        scores = score(ctx, pb, surrogate)
        ctx.progress(0.7, "randomised-weights control")
        randomised = C.randomised_control(ctx, pb, scores, surrogate)
        analysis = Analysis.of(surrogate, out_names, _shown_outputs(cfg, K), F.constant_outputs(scores.heldout.y))
        formulas = _formulas(pb, surrogate, analysis)
        n_eval = surrogate.fit.n_evaluations + scores.n_evaluations + pb.screen_evaluations + randomised.n_evaluations
        return Result(cfg=cfg, problem=pb, surrogate=surrogate, scores=scores, randomised=randomised,
                      analysis=analysis, formulas=formulas, formula_scores=FormulaScores.of(formulas, scores),
                      n_evaluations=n_eval, output_words=_output_words(cfg.output, K, data, ctx.model),
                      regression=getattr(ctx.model, "task", None) == "regression")


def _formulas(pb: Problem, surrogate: Surrogate, analysis: Analysis) -> list[ReadableFormula]:
    box_map = BoxMap.from_box(pb.reduction.names, pb.box)
    return [dataclasses.replace(
        readable_formula(surrogate.coef[k], surrogate.alpha, surrogate.gamma, box_map, pb.cfg.basis,
                         share=pb.cfg.formula_share, max_terms=pb.cfg.formula_max_terms,
                         constant=bool(analysis.constant[k])), output=analysis.out_names[k], index=k)
            for k in analysis.shown]


def _shown_outputs(cfg: SpectralConfig, K: int) -> list[int]:
    if cfg.classes is None:
        return list(range(min(K, 10)))
    bad = [c for c in cfg.classes if not 0 <= c < K]
    if bad:
        raise MethodError(f"classes {bad} are not outputs of this model (it has {K})",
                          hint=f"use output indices in 0..{K - 1}")
    return list(dict.fromkeys(cfg.classes))


def _output_words(output: str, K: int, data: Any, model: Any = None) -> str:
    """What the surrogate explains, in words that hold for this model (no "class probability" for a regressor)."""
    if getattr(model, "task", None) == "regression":
        return "predicted values (regression)"
    classifier = bool(data.class_names) or (data.y is not None and data.y.dtype.kind in "iub")
    if output == "logit":
        return "logits" if classifier else "raw outputs"
    squash = "softmax" if K > 1 else "sigmoid"
    return f"{squash} probabilities" if output == "prob" else f"log-{squash} outputs"
