"""What the attributes look like (A3.3): maximum-activating samples (MAS) and activation maximisation with
partial initialisation (AM+PI), plus the report's figures.

AM+PI starts from a faint copy ``x₀ = κ·x_MAS`` of a maximum-activating sample and maximises
``C·φ_j(x) − λ_tv·TV(x) − λ_B·B(x) − λ_1·mean|x|`` with Adam (12 rounds × 50 steps, a fresh Adam per round,
lr 0.05 halved every round), where TV is the anisotropic L1 total variation and B the mean over all pixels
of ``|x|·1[x ∉ [lo, hi]]``. Several images are optimised in one batch: Adam is element-wise and the
objective is a sum of per-image terms, so this equals separate runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from governance.figures import pyplot


# ------------------------------------------------------------------------------------------- AM+PI
@dataclass
class AMSettings:
    kappa: float = 0.3
    C: float = 2.0
    lambda_B: float = 10.0
    lambda_tv: float = 6.0
    lambda_1: float = 0.0
    lo: float = 0.0
    hi: float = 1.0
    rounds: int = 12
    steps: int = 50
    lr: float = 0.05
    lr_decay: float = 0.5
    clamp: bool = False

    @classmethod
    def for_range(cls, lo: float, hi: float, **overrides: Any) -> "AMSettings":
        """The reference settings: grey-scale [0, 1] data, or the CIFAR (normalised data) settings."""
        if lo >= 0.0 and hi <= 1.0:
            base = cls(kappa=0.3, C=2.0, lambda_B=10.0, lambda_tv=6.0, lo=0.0, hi=1.0)
        else:
            base = cls(kappa=0.4, C=2.0, lambda_B=20.0, lambda_tv=20.0, lo=float(lo), hi=float(hi))
        return cls(**{**asdict(base), **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean |vertical differences| + mean |horizontal differences|."""
    dv = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dh = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dv + dh


def out_of_range(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Per image: ``B(x)`` = mean over all pixels of |x| where x ∉ [lo, hi] (in-range pixels count 0)."""
    outside = (x < lo) | (x > hi)
    return (x.abs() * outside).flatten(1).mean(1)


def attribute_values(model: Any, interp: Any, x: torch.Tensor) -> torch.Tensor:
    """Φ(x) through the (frozen) predictor's taps; differentiable with respect to x."""
    layers = interp.spec.layers
    _, acts = model.forward_with_activations(x, layers)
    return interp.attributes([acts[l].float() for l in layers])


def activation_maximisation(model: Any, interp: Any, x_init: np.ndarray, attributes: Sequence[int],
                            settings: AMSettings) -> dict[str, np.ndarray]:
    """AM+PI for image ``i`` and attribute ``attributes[i]``, all images in one batch.

    Returns the optimised images, φ_j before (at κ·x_init) and after, and the share of out-of-range pixels.
    Only the input is optimised: gradients are taken with ``torch.autograd.grad`` so neither the predictor
    nor the interpreter accumulates any."""
    interp.eval()
    dev = next(interp.parameters()).device
    js = torch.as_tensor(list(attributes), dtype=torch.long, device=dev)
    rows = torch.arange(len(js), device=dev)
    x0 = settings.kappa * torch.as_tensor(np.asarray(x_init), dtype=torch.float32, device=dev)
    with torch.no_grad():
        before = attribute_values(model, interp, x0)[rows, js]
    x = x0.clone().requires_grad_(True)
    s = settings
    for r in range(s.rounds):
        opt = torch.optim.Adam([x], lr=s.lr * s.lr_decay**r)
        for _ in range(s.steps):
            phi = attribute_values(model, interp, x)[rows, js]
            obj = (s.C * phi - s.lambda_tv * total_variation(x) - s.lambda_B * out_of_range(x, s.lo, s.hi)
                   - s.lambda_1 * x.abs().flatten(1).mean(1))
            (grad,) = torch.autograd.grad(-obj.sum(), x)
            x.grad = grad
            opt.step()
            if s.clamp:
                with torch.no_grad():
                    x.clamp_(s.lo, s.hi)
    x = x.detach()
    with torch.no_grad():
        after = attribute_values(model, interp, x)[rows, js]
    outside = ((x < s.lo) | (x > s.hi)).flatten(1).float().mean(1)
    return {"images": x.cpu().numpy(), "start": x0.cpu().numpy(), "phi_before": before.cpu().numpy(),
            "phi_after": after.cpu().numpy(), "outside_fraction": outside.cpu().numpy()}


def live_starts(model: Any, interp: Any, X: np.ndarray, mas: np.ndarray, pairs: Sequence[tuple[int, int, float]],
                kappa: float) -> tuple[np.ndarray, list[tuple[int, int, float]], list[tuple[int, int, float]]]:
    """AM+PI only works from a start where the attribute is alive (oracle O-F6): for each pair, the MAS
    sample with the largest ``φ_j(κ·x)``; pairs with no live start are returned separately (skipped)."""
    cand = mas[: len(pairs)]
    flat = cand[cand >= 0]
    if len(flat) == 0:
        return np.zeros(0, dtype=np.int64), [], list(pairs)
    interp.eval()
    dev = next(interp.parameters()).device
    with torch.no_grad():
        phi = attribute_values(model, interp, kappa * torch.as_tensor(X[flat], dtype=torch.float32, device=dev))
    phi = phi.cpu().numpy()
    value = {int(i): phi[k] for k, i in enumerate(flat)}
    starts, kept, skipped = [], [], []
    for row, pair in enumerate(pairs):
        opts = [(value[int(i)][pair[1]], int(i)) for i in cand[row] if i >= 0]
        best = max(opts) if opts else (0.0, -1)
        if best[0] > 0:
            starts.append(best[1])
            kept.append(pair)
        else:
            skipped.append(pair)
    return np.asarray(starts, dtype=np.int64), kept, skipped


def max_activating(phi: np.ndarray, attributes: Sequence[int], k: int = 3) -> np.ndarray:
    """For each attribute, the indices of the ``k`` samples with the largest φ_j, searched over **all** samples
    (every class): an attribute shared by several classes then shows samples of each (padded with −1 when there
    are fewer than ``k`` samples)."""
    out = np.full((len(attributes), k), -1, dtype=np.int64)
    for row, j in enumerate(attributes):
        best = np.argsort(-phi[:, j], kind="stable")[:k]
        out[row, : len(best)] = best
    return out


# ------------------------------------------------------------------------------------------- figures
def _show(ax: Any, img: np.ndarray, lo: float, hi: float) -> None:
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] == 3:
        ax.imshow(np.clip((img.transpose(1, 2, 0) - lo) / max(hi - lo, 1e-12), 0, 1))
    else:
        ax.imshow(img.mean(0) if img.ndim == 3 else img, cmap="gray", vmin=lo, vmax=hi)
    ax.set_xticks([])
    ax.set_yticks([])


def _class_label(c: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[c]) if class_names and c < len(class_names) else str(c)


def plot_global_relevance(R: np.ndarray, class_names: Sequence[str] | None, threshold: float) -> Any:
    plt = pyplot()
    C, J = R.shape
    fig, ax = plt.subplots(figsize=(min(7.0, 2.0 + 0.22 * J), min(5.0, 1.5 + 0.3 * C)))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
    im = ax.imshow(np.ma.masked_invalid(R), cmap=cmap, vmin=-1, vmax=1, aspect="auto")
    cs, js = np.nonzero(np.nan_to_num(R, nan=-np.inf) > threshold)
    ax.scatter(js, cs, s=6, c="black", marker="o", label=f"r > {threshold:g}")
    ax.set_xticks(range(J))
    ax.set_xticklabels([str(j) for j in range(J)], fontsize=6)
    ax.set_yticks(range(C))
    ax.set_yticklabels([_class_label(c, class_names) for c in range(C)], fontsize=7)
    ax.set_xlabel("attribute j")
    ax.set_ylabel("class c (interpreter's prediction)")
    ax.set_title("Global class-attribute relevance r(j, c)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="mean relevance")
    if len(cs):
        ax.legend(loc="upper right", fontsize=6, frameon=True)
    return fig


def plot_local(samples: np.ndarray | None, r: np.ndarray, f_pred: np.ndarray, g_pred: np.ndarray,
               class_names: Sequence[str] | None, lo: float, hi: float) -> Any:
    """One row per sample: the input (images) and its relevance vector with the top-3 attributes marked."""
    plt = pyplot()
    n, J = r.shape
    with_img = samples is not None
    fig, axes = plt.subplots(n, 2 if with_img else 1, figsize=(6.5, 1.3 * n + 0.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 5]} if with_img else None)
    for i in range(n):
        ax = axes[i, -1]
        top = set(np.argsort(-r[i])[:3].tolist())
        colors = ["#c0392b" if j in top and r[i, j] > 0 else "#7f8c8d" for j in range(J)]
        ax.bar(range(J), r[i], color=colors)
        ax.axhline(0, color="black", lw=0.5)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel("r_j(x)", fontsize=7)
        flag = "" if f_pred[i] == g_pred[i] else "  (DISAGREE)"
        ax.set_title(f"predictor: {_class_label(f_pred[i], class_names)}, interpreter: "
                     f"{_class_label(g_pred[i], class_names)}{flag}; top: {', '.join(map(str, sorted(top)))}",
                     fontsize=7)
        ax.set_xticks(range(J))
        ax.set_xticklabels([str(j) for j in range(J)], fontsize=5)
        if with_img:
            _show(axes[i, 0], samples[i], lo, hi)
    axes[-1, -1].set_xlabel("attribute j")
    fig.suptitle("Local interpretations: relevance of each attribute to the interpreter's class", fontsize=9)
    return fig


def plot_mas(images: np.ndarray, mas: np.ndarray, pairs: Sequence[tuple[int, int, float]],
             class_names: Sequence[str] | None, lo: float, hi: float, model_class: np.ndarray,
             labels: np.ndarray | None = None) -> Any:
    """Image grid: one row per (class, attribute) pair with the attribute's maximum-activating samples over all
    classes, each captioned with the model's class (and the true label when known)."""
    plt = pyplot()
    rows, k = mas.shape
    fig, axes = plt.subplots(rows, k, figsize=(0.95 * k + 1.6, 1.1 * rows + 0.4), squeeze=False)
    for r_i, (c, j, rel) in enumerate(pairs):
        for col in range(k):
            ax = axes[r_i, col]
            i = mas[r_i, col]
            if i < 0:
                ax.axis("off")
                continue
            _show(ax, images[i], lo, hi)
            text = f"f: {_class_label(int(model_class[i]), class_names)}"
            if labels is not None:
                text += f" y: {_class_label(int(labels[i]), class_names)}"
            ax.set_xlabel(text, fontsize=5, color="black" if model_class[i] == c else "#c0392b", labelpad=1)
        axes[r_i, 0].set_ylabel(f"c={_class_label(c, class_names)}\nφ{j} ({rel:.2f})", fontsize=7, rotation=0,
                                ha="right", va="center")
    fig.suptitle("Maximum-activating samples of each relevant attribute, over all classes\n"
                 "(f: the model's class, red when it is not the row's class)", fontsize=8)
    return fig


def plot_am(result: dict[str, np.ndarray], pairs: Sequence[tuple[int, int, float]],
            class_names: Sequence[str] | None, lo: float, hi: float) -> Any:
    plt = pyplot()
    n = len(pairs)
    fig, axes = plt.subplots(2, n, figsize=(max(3.0, 1.25 * n + 0.6), 3.0), squeeze=False)
    for i, (c, j, _) in enumerate(pairs):
        _show(axes[0, i], result["start"][i], lo, hi)
        _show(axes[1, i], result["images"][i], lo, hi)
        axes[0, i].set_title(f"φ{j} / c={_class_label(c, class_names)}", fontsize=7)
        axes[1, i].set_xlabel(f"φ {result['phi_before'][i]:.2g}→{result['phi_after'][i]:.2g}", fontsize=6)
    axes[0, 0].set_ylabel("start κ·x", fontsize=7)
    axes[1, 0].set_ylabel("AM+PI", fontsize=7)
    fig.suptitle("Activation maximisation with partial initialisation", fontsize=9)
    return fig


def plot_profiles(X: np.ndarray, phi: np.ndarray, attrs: Sequence[int], feature_names: Sequence[str] | None,
                  k: int = 10, max_features: int = 20) -> Any:
    """Tabular data: for each attribute, the standardised mean of its top-k activating samples per feature
    (what a high φ_j looks like in the inputs)."""
    plt = pyplot()
    Xf = X.reshape(len(X), -1).astype(np.float64)
    mu, sd = Xf.mean(0), Xf.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    prof = np.stack([(Xf[np.argsort(-phi[:, j])[:k]].mean(0) - mu) / sd for j in attrs])
    feats = np.argsort(-np.abs(prof).max(0))[:max_features]
    names = [feature_names[f] if feature_names and f < len(feature_names) else f"x{f}" for f in feats]
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.28 * len(attrs)))
    lim = max(1e-6, float(np.abs(prof[:, feats]).max()))
    im = ax.imshow(prof[:, feats], cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_yticks(range(len(attrs)))
    ax.set_yticklabels([f"φ{j}" for j in attrs], fontsize=7)
    ax.set_xticks(range(len(feats)))
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=6)
    ax.set_title(f"Attribute profiles: mean of the top-{k} activating samples (z-scores)")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="z-score")
    return fig


def plot_training(history: Sequence[dict[str, Any]], cns: dict[float, float]) -> Any:
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(6.5, 2.6))
    taus = sorted(cns)
    a1.plot(taus, [cns[t] for t in taus], marker="o")
    a1.set_xlabel("τ")
    a1.set_ylabel("CNS_g(τ)")
    a1.set_title("Conciseness (lower is better)")
    ep = [h["epoch"] for h in history]
    if history and "fidelity" in history[0]:
        a2.plot(ep, [h["fidelity"] for h in history], marker="o", label="fidelity (held out)")
        a2.set_ylim(0, 1.02)
    a2b = a2.twinx()
    a2b.plot(ep, [h.get("L_of", np.nan) for h in history], color="#c0392b", ls="--", label="L_of (train)")
    a2b.set_ylabel("L_of", fontsize=7)
    a2b.spines["right"].set_visible(True)
    from matplotlib.ticker import MaxNLocator

    a2.xaxis.set_major_locator(MaxNLocator(integer=True))
    a2.set_xlabel("epoch")
    a2.set_ylabel("fidelity")
    a2.set_title("Training")
    lines = a2.get_legend_handles_labels()
    lines2 = a2b.get_legend_handles_labels()
    a2.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=6, loc="center right")
    return fig
