"""FLINT's training losses (methods-flint-bort.md A2.2, implemented form) and the warm-up schedule (A2.3).

Total objective: ``L = L_pred + β·L_of + γ·L_if + δ·L_cd + λ_spa·L_sp``; post-hoc drops ``L_pred``.
Each weight ``a·[epoch > k]`` is zero until epoch ``k + 1`` (epochs are numbered from 1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F


def softmax_entropy(v: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``E(v) = −Σ softmax(v)·log softmax(v)``, in the stable form (no NaN when a probability underflows)."""
    return -(torch.softmax(v, dim=dim) * torch.log_softmax(v, dim=dim)).sum(dim=dim)


def output_fidelity_loss(g_logits: torch.Tensor, f_logits: torch.Tensor) -> torch.Tensor:
    """Soft cross-entropy with the predictor as the (detached) target: the code's direction of ``L_of``.

    ``mean_x −Σ_c softmax(f(x))_c · log softmax(g(x))_c``. Its minimum over g is the mean entropy of
    ``softmax(f(x))``, reached when g's logits equal f's up to a per-sample constant.
    """
    target = torch.softmax(f_logits.detach(), dim=-1)
    return -(target * torch.log_softmax(g_logits, dim=-1)).sum(dim=-1).mean()


def input_fidelity_loss(x_hat: torch.Tensor, x: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Decoder reconstruction error, a batch- and element-wise mean: MSE for [0, 1] data, L1 for
    normalised data (the reference code's MNIST and CIFAR choices)."""
    if kind == "mse":
        return F.mse_loss(x_hat, x)
    if kind == "l1":
        return F.l1_loss(x_hat, x)
    raise ValueError(f"unknown reconstruction loss '{kind}' (use 'mse' or 'l1')")


def conciseness_diversity_loss(phi: torch.Tensor) -> torch.Tensor:
    """Entropy part of ``L_cd`` on a batch: ``mean_b E(|Φ_b|) − E(mean_b |Φ_b|)``.

    The first term rewards samples explained by few attributes, the second rewards the batch using many
    attributes. Bounded below by ``−log J``.
    """
    a = phi.abs()
    return softmax_entropy(a).mean() - softmax_entropy(a.mean(dim=0))


def sparsity_loss(phi: torch.Tensor) -> torch.Tensor:
    """``mean over batch and J of |Φ|``: stops the entropies from being gamed by scaling Φ up."""
    return phi.abs().mean()


@dataclass(frozen=True)
class GatedWeight:
    """A loss weight ``value·[epoch > after]`` (zero until epoch ``after + 1``)."""

    value: float
    after: int = 0

    def at(self, epoch: int) -> float:
        return float(self.value) if epoch > self.after else 0.0


@dataclass(frozen=True)
class LossSchedule:
    """The weights of the four interpreter losses and their warm-up gates.

    Defaults are the reference code's MNIST/FashionMNIST row (A2.3): β = 0.5·[ep>2], γ = 0.8,
    δ = 0.2·[ep>4], λ_spa = 0.1·[ep>2]. Reconstruction starts first, then output fidelity and sparsity,
    and the entropy terms last (switching them on early tends to kill attributes).
    """

    beta: GatedWeight = GatedWeight(0.5, 2)  # output fidelity L_of
    gamma: GatedWeight = GatedWeight(0.8, 0)  # input fidelity L_if
    delta: GatedWeight = GatedWeight(0.2, 4)  # conciseness + diversity (entropies)
    sparsity: GatedWeight = GatedWeight(0.1, 2)  # l1 on Φ (= δ·η)

    def at(self, epoch: int) -> dict[str, float]:
        return {"beta": self.beta.at(epoch), "gamma": self.gamma.at(epoch), "delta": self.delta.at(epoch),
                "sparsity": self.sparsity.at(epoch)}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interpreter_loss(
    weights: dict[str, float],
    *,
    g_logits: torch.Tensor,
    f_logits: torch.Tensor,
    phi: torch.Tensor,
    x_hat: torch.Tensor | None,
    x: torch.Tensor,
    reconstruction: str,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the interpreter's losses for one batch, and each (unweighted) term for logging."""
    l_of = output_fidelity_loss(g_logits, f_logits)
    l_if = input_fidelity_loss(x_hat, x, reconstruction) if x_hat is not None else phi.new_zeros(())
    l_cd = conciseness_diversity_loss(phi)
    l_sp = sparsity_loss(phi)
    total = (weights["beta"] * l_of + weights["gamma"] * l_if + weights["delta"] * l_cd
             + weights["sparsity"] * l_sp)
    terms = {"L_of": float(l_of.detach()), "L_if": float(l_if.detach()), "L_cd": float(l_cd.detach()),
             "L_sp": float(l_sp.detach())}
    return total, terms
