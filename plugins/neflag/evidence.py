"""NeFLAG's explanation-quality evidence: the deletion/insertion games of NeFLAG and its baselines with their
controls (random attributions, the model with its weights randomised), the rank correlations of the
randomisation sanity check, max-sensitivity (with common random numbers) and seed stability. Everything is
measured with governance.quality, so every method is scored alike."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from governance import Control, MethodContext, quality
from governance_plugins.neflag import flux
from governance_plugins.neflag.figures import LABELS
from governance_plugins.neflag.runner import METRIC_PREFIX, Prepared


@dataclass
class Measured:
    """What :class:`Evidence` measured: metrics, curves for the figures, tables' rows and the controls."""

    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    aucs: dict[str, dict[str, float]] = field(default_factory=dict)
    fractions: np.ndarray | None = None
    layers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    controls: list[Control] = field(default_factory=list)


class Evidence:
    """Measures one run's attributions. ``warnings`` is the run's list: what could not be measured goes there."""

    def __init__(self, ctx: MethodContext, p: Prepared, maps: dict[str, np.ndarray], warnings: list[str]) -> None:
        self.ctx, self.p, self.maps, self.warnings = ctx, p, maps, warnings
        self.qc = ctx.config.quality
        self.methods = list(maps)
        self.out = Measured()

    def measure(self) -> Measured:
        qc = self.qc
        games = self._games() if qc.deletion_insertion else {}
        randomised = self._randomised(games) if qc.randomisation else {}
        if games and qc.controls:
            self._controls(games, randomised)
        if qc.max_sensitivity:
            self._sensitivity()
        if qc.seed_stability:
            self._stability()
        return self.out

    # ------------------------------------------------------------------------------------ the game
    def game(self, attributions: np.ndarray) -> quality.DeletionInsertion:
        """Deletion/insertion of ``attributions`` on the real model, the dataset's baseline as substrate."""
        p = self.p
        return quality.deletion_insertion(
            self.ctx.model.predict, p.X, attributions, np.asarray(self.ctx.data.baseline), p.targets,
            steps=self.qc.steps, channel_axis=0 if p.image_like and p.X.ndim == 4 else None,
            outputs="probabilities" if p.kind == "probabilities" else "logits",
            rng=np.random.default_rng(self.ctx.seed))

    def _games(self) -> dict[str, quality.DeletionInsertion]:
        games = {}
        for i, m in enumerate(self.methods):
            self.ctx.progress(0.25 + 0.05 * i, f"deletion/insertion for {LABELS[m]}")
            res = games[m] = self.game(self.maps[m])
            pre = METRIC_PREFIX[m]
            self.out.metrics[f"{pre}deletion_auc"] = res.mean_deletion_auc
            self.out.metrics[f"{pre}insertion_auc"] = res.mean_insertion_auc
            self.out.metrics[f"{pre}difference_auc"] = res.mean_difference_auc
            self.out.curves[m] = {"deletion": res.deletion, "insertion": res.insertion}
            self.out.aucs[m] = {"deletion": res.mean_deletion_auc, "insertion": res.mean_insertion_auc}
            self.out.fractions = res.fractions
        return games

    # ------------------------------------------------------------------------------------ controls
    def _controls(self, games: dict[str, quality.DeletionInsertion],
                  randomised: dict[str, list[quality.RandomisedGame]]) -> None:
        self.ctx.progress(0.6, "random-attribution controls")
        rng = np.random.default_rng(np.random.SeedSequence(entropy=int(self.ctx.seed), spawn_key=(7,)))
        random = [self.game(a) for a in quality.random_maps(self.p.X.shape, self.qc.random_draws, rng)]
        for m in self.methods:
            self.out.controls += quality.deletion_insertion_controls(
                games[m], random=random, randomised=randomised.get(m, []), prefix=METRIC_PREFIX[m],
                method_label=LABELS[m])

    def _randomised(self, games: dict[str, quality.DeletionInsertion]) -> dict[str, list[quality.RandomisedGame]]:
        """Every method's maps from randomised copies of the model (full and/or cascading, Adebayo et al. 2018),
        on all explained inputs: their rank correlation with the real maps, and their game on the real model."""
        qc, p = self.qc, self.p
        self.ctx.progress(0.4, "randomised-model controls")
        modes = ["full", "cascading"] if qc.randomisation_mode == "both" else [qc.randomisation_mode]
        out: dict[str, list[quality.RandomisedGame]] = {m: [] for m in self.methods}
        rho: dict[str, dict[str, list[tuple[float, float]]]] = {m: {k: [] for k in modes} for m in self.methods}
        for mode in modes:
            copies = quality.randomised_models(p.attributor.module, mode=mode, draws=qc.randomised_draws,
                                               seed=self.ctx.seed, max_steps=qc.cascading_steps)
            for rm in copies:
                for m in self.methods:
                    try:
                        got = p.attributor.run(m, p.X, p.targets, module=rm.module)
                    except flux.NonFiniteError as exc:
                        self.warnings.append(f"{LABELS[m]} on a randomised copy of the model ({rm.label}) was "
                                             f"skipped: {exc}")
                        continue
                    ref = self.maps[m]
                    rho[m][mode].append((_mean(quality.spearman_rows(ref, got)),
                                         _mean(quality.spearman_rows(np.abs(ref), np.abs(got)))))
                    if mode == "cascading":
                        self.out.layers.setdefault(m, []).append(
                            {"layer": rm.layers[-1], "label": rm.label, "spearman": rho[m][mode][-1][0]})
                    if games:
                        out[m].append(quality.RandomisedGame(mode, rm.label, self.game(got)))
        for m in self.methods:
            pairs = rho[m]["full"] if rho[m].get("full") else rho[m].get("cascading", [])[-1:]
            if pairs:
                pre = METRIC_PREFIX[m]
                self.out.metrics[f"{pre}randomisation_spearman"] = _mean([a for a, _ in pairs])
                self.out.metrics[f"{pre}randomisation_spearman_abs"] = _mean([b for _, b in pairs])
        return out

    # ---------------------------------------------------------------------------------- robustness
    def _sensitivity(self) -> None:
        """Max-sensitivity; NeFLAG explains each perturbed copy with its input's own sphere seeds (common random
        numbers), so the figure is the map's change with the input, not its Monte-Carlo noise."""
        qc, p = self.qc, self.p
        self.ctx.progress(0.75, "max-sensitivity")
        k = min(qc.robustness_inputs, len(p.X))
        seeds = p.attributor.seeds(k)
        crn = [seeds[i] for i in quality.perturbed_sources(k, qc.sensitivity_samples)]
        for m in self.methods:
            def attr_fn(Xp: np.ndarray, t: np.ndarray, m: str = m) -> np.ndarray:
                return p.attributor.run(m, Xp, t, seeds=crn if m == "neflag" else None)

            sens = quality.max_sensitivity(attr_fn, p.X[:k], p.targets[:k], radius=qc.sensitivity_radius,
                                           n_samples=qc.sensitivity_samples,
                                           rng=np.random.default_rng(self.ctx.seed + 1), scale=p.scale,
                                           attributions=self.maps[m][:k])
            self.out.metrics[f"{METRIC_PREFIX[m]}max_sensitivity"] = float(np.mean(sens))

    def _stability(self) -> None:
        qc, p = self.qc, self.p
        self.ctx.progress(0.85, "seed stability")
        k = min(qc.robustness_inputs, len(p.X))
        main = self.maps["neflag"][:k]

        def seeded(Xs: np.ndarray, t: np.ndarray, s: int) -> np.ndarray:
            return main if s == 0 else p.attributor.neflag(Xs, t, stream=s)

        st = quality.seed_stability(seeded, p.X[:k], p.targets[:k], list(range(qc.stability_seeds)))
        self.out.metrics["seed_stability"] = st.mean_spearman
        self.out.metrics["seed_stability_pearson"] = st.mean_pearson


def _mean(values: Any) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
