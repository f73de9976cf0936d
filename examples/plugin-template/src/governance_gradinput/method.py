"""Gradient x input (Shrikumar et al., 2016): the attribution of feature i for output c is x_i * df_c/dx_i.

For a linear model f(x) = Wx + b it is exactly W[c] * x, and the attributions sum to f_c(x) - f_c(0). For
networks with biases and non-linearities they need not: the ``completeness_gap`` metric reports how far the
sum is from f_c(x) - f_c(0), so a reader knows how much of the output the explanation accounts for.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from governance import Explanation, Method, MethodConfig, Requirement
from governance.errors import MethodError


class GradientInputConfig(MethodConfig):
    n_samples: int = Field(64, ge=1, description="samples to explain (the first n of the run's data)")
    target: int | None = Field(None, ge=0, description="output index to explain; None = the predicted class")
    batch_size: int = Field(64, ge=1, description="samples per forward/backward pass")
    top_k: int = Field(10, ge=1, description="features listed in the report table")


class GradientInput(Method):
    name = "gradinput"
    version = "0.1.0"
    title = "Gradient × input attributions"
    description = ("Multiplies each input feature by the gradient of the explained output with respect to it: "
                   "a fast, first-order local attribution for differentiable models.")
    reference = ("A. Shrikumar, P. Greenside, A. Shcherbina, A. Kundaje. Not Just a Black Box: Learning Important "
                 "Features Through Propagating Activation Differences. arXiv:1605.01713, 2016.")
    requires = frozenset({Requirement.GRADIENTS})
    Config = GradientInputConfig
    report_template = "governance_gradinput:section.html.j2"

    def explain(self, ctx: Any, **kwargs: Any) -> Explanation:
        cfg: GradientInputConfig = ctx.config
        X = ctx.data.X[: cfg.n_samples]
        attr, targets, outputs, at_zero = self._attribute(ctx, X, cfg)
        n = len(X)
        flat = np.abs(attr.reshape(n, -1))
        total = flat.sum(1)
        k = max(1, int(np.ceil(0.1 * flat.shape[1])))
        top_share = np.where(total > 0, np.sort(flat, 1)[:, -k:].sum(1) / np.maximum(total, 1e-30), 0.0)
        delta = outputs - at_zero
        gap = np.abs(attr.reshape(n, -1).sum(1) - delta) / np.maximum(np.abs(delta), 1e-6)
        metrics = {
            "mean_abs_attribution": float(flat.mean()),
            "top10pct_share": float(top_share.mean()),
            "completeness_gap": float(np.median(gap)),
        }
        table, findings = self._top_features(ctx, attr, cfg.top_k)
        figure = self._figure(ctx, attr)
        what = "the predicted class" if cfg.target is None else f"output {cfg.target}"
        summary = (f"Gradient × input on {n} samples, explaining {what}: the top 10% of features carry "
                   f"{100 * metrics['top10pct_share']:.0f}% of the attribution mass; the attributions account for "
                   f"the output change from an all-zero input up to a median relative gap of "
                   f"{metrics['completeness_gap']:.2g}.")
        return Explanation(
            method=self.name, summary=summary, metrics=metrics,
            arrays={"attributions": attr.astype(np.float32), "targets": targets.astype(np.int64)},
            figures={"importance": figure}, tables={"top_features": table}, findings=findings,
            details={"target": what, "n_samples": n, "modality": ctx.data.modality},
        )

    # ---------------------------------------------------------------------------------- computation
    @staticmethod
    def _attribute(ctx: Any, X: np.ndarray, cfg: GradientInputConfig) -> tuple[np.ndarray, ...]:
        """One forward/backward pass per batch; returns attributions, targets, f_c(x) and f_c(0)."""
        import torch

        module = ctx.model.torch_module()
        device = ctx.device
        attrs, targets, outs = [], [], []
        with torch.enable_grad():
            zero = module(torch.zeros((1, *X.shape[1:]), dtype=torch.float32, device=device)).detach()
            zero = zero.reshape(1, -1)
            n_out = zero.shape[1]
            if cfg.target is not None and cfg.target >= n_out:
                raise MethodError(f"target {cfg.target} does not exist: the model has {n_out} output(s)",
                                  hint=f"set gradinput.target between 0 and {n_out - 1}, or leave it unset")
            for i in range(0, len(X), cfg.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(X[i : i + cfg.batch_size])).to(device).requires_grad_(True)
                out = module(x).reshape(len(x), -1)
                tgt = (out.argmax(1) if cfg.target is None
                       else torch.full((len(x),), cfg.target, dtype=torch.long, device=device))
                picked = out.gather(1, tgt[:, None]).squeeze(1)
                (grad,) = torch.autograd.grad(picked.sum(), x)
                attrs.append((grad * x).detach().cpu().numpy())
                targets.append(tgt.cpu().numpy())
                outs.append(picked.detach().cpu().numpy())
        targets_np = np.concatenate(targets)
        return (np.concatenate(attrs), targets_np, np.concatenate(outs).astype(np.float64),
                zero.cpu().numpy()[0, targets_np].astype(np.float64))

    # ---------------------------------------------------------------------------------- presentation
    @staticmethod
    def _top_features(ctx: Any, attr: np.ndarray, top_k: int) -> tuple[list[dict[str, Any]], list[str]]:
        flat = attr.reshape(len(attr), -1)
        mean_abs = np.abs(flat).mean(0)
        share = mean_abs / max(float(mean_abs.sum()), 1e-30)
        names = ctx.data.feature_names if ctx.data.feature_names and len(ctx.data.feature_names) == flat.shape[1] \
            else [_pixel_name(i, ctx.data.sample_shape) for i in range(flat.shape[1])]
        order = np.argsort(-mean_abs)[:top_k]
        rows = [{"feature": names[i], "mean_abs_attribution": float(mean_abs[i]), "share": float(share[i]),
                 "mean_signed": float(flat[:, i].mean())} for i in order]
        first = rows[0]
        direction = "raises" if first["mean_signed"] >= 0 else "lowers"
        findings = [f"'{first['feature']}' carries {100 * first['share']:.1f}% of the attribution mass and on average "
                    f"{direction} the explained output."]
        return rows, findings

    @staticmethod
    def _figure(ctx: Any, attr: np.ndarray) -> Any:
        from governance.figures import pyplot

        plt = pyplot()
        mean_abs = np.abs(attr).mean(0)
        if ctx.data.modality == "image" and attr.ndim == 4:
            fig, ax = plt.subplots(figsize=(4.5, 3.5))
            im = ax.imshow(mean_abs.mean(0), cmap="magma")
            fig.colorbar(im, ax=ax, label="mean |gradient × input|")
            ax.set_title("Where the attribution mass lies (mean over samples and channels)")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            flat = mean_abs.reshape(-1)
            names = ctx.data.feature_names or [f"x{i}" for i in range(flat.size)]
            order = np.argsort(-flat)[:15][::-1]
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.barh([names[i] for i in order], flat[order], color="#3b6ea5")
            ax.set_xlabel("mean |gradient × input|")
            ax.set_title("Most influential features (top 15)")
        return ctx.save_figure(fig, "importance")


def _pixel_name(index: int, shape: tuple[int, ...]) -> str:
    coords = np.unravel_index(index, shape)
    return "pixel(" + ", ".join(str(int(c)) for c in coords) + ")"
