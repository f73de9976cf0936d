"""The subset-lattice transforms on torch tensors (CPU or CUDA), for the first-order solver.

The Möbius transform is the Kronecker power M = L⊗…⊗L of L = [[1, 0], [-1, 1]] (bit j of the subset index ↔
factor j). Instead of n butterfly passes (n small kernels each), the bits are split into at most three groups and
each group's dense factor (2^b × 2^b, b ≤ 7) is applied by one matrix product: two or three GEMMs per transform,
which is what keeps a torch iteration cheap on a CPU and few kernels on a GPU. Everything broadcasts over leading
axes (samples, models) and works on the last axis of length 2ⁿ in float64. Index convention as in
:mod:`governance_plugins.interaction.transforms` (bit j set ⇔ variable j ∈ T).
"""

from __future__ import annotations

import math
from typing import Any

MAX_GROUP_BITS = 7


def bit_groups(n: int) -> list[int]:
    """Sizes of the bit groups, most significant group first (their sum is n)."""
    if n == 0:
        return []
    k = max(1, math.ceil(n / MAX_GROUP_BITS))
    base, extra = divmod(n, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


class LatticeOps:
    """M (Möbius), Z = M⁻¹ (zeta), the OR transform and the OR inverse, with their adjoints."""

    def __init__(self, n: int, device: Any = "cpu") -> None:
        import torch

        self.torch = torch
        self.n, self.size = n, 1 << n
        self.groups = bit_groups(n)
        self.device = device
        l_m = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
        l_z = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
        self._m = [self._power(l_m, b).to(device) for b in self.groups]
        self._z = [self._power(l_z, b).to(device) for b in self.groups]
        self._mt = [f.T.contiguous() for f in self._m]
        self._zt = [f.T.contiguous() for f in self._z]

    def _power(self, factor: Any, bits: int) -> Any:
        out = self.torch.ones(1, 1, dtype=self.torch.float64)
        for _ in range(bits):
            out = self.torch.kron(out, factor)
        return out

    def _apply(self, f: Any, mats: list[Any]) -> Any:
        lead = f.shape[:-1]
        if not mats:
            return f.clone()
        if len(mats) == 1:
            return (f.reshape(-1, self.size) @ mats[0].T).reshape(*lead, self.size)
        if len(mats) == 2:
            x = f.reshape(-1, 1 << self.groups[0], 1 << self.groups[1])
            return (mats[0] @ x @ mats[1].T).reshape(*lead, self.size)
        x = f.reshape(-1, *[1 << b for b in self.groups])
        for axis, mat in enumerate(mats):
            x = self.torch.movedim(self.torch.tensordot(x, mat, dims=([axis + 1], [1])), -1, axis + 1)
        return x.reshape(*lead, self.size)

    def moebius(self, f: Any) -> Any:
        return self._apply(f, self._m)

    def moebius_adjoint(self, g: Any) -> Any:
        return self._apply(g, self._mt)

    def zeta(self, f: Any) -> Any:
        return self._apply(f, self._z)

    def zeta_adjoint(self, g: Any) -> Any:
        return self._apply(g, self._zt)

    def and_or(self, f_and: Any, f_or: Any) -> tuple[Any, Any]:
        """(Möbius(f_and), OR-transform(f_or)) with one stacked product: OR = -Möbius of the complement
        (reversed last axis), entry ∅ overwritten by f_or(∅) (spec §6.3)."""
        torch = self.torch
        out = self.moebius(torch.cat([f_and, f_or.flip(-1)], dim=-2))
        m = f_and.shape[-2]
        i_and, i_or = out[..., :m, :], -out[..., m:, :]
        i_or[..., 0] = f_or[..., 0]
        return i_and, i_or

    def and_or_adjoint(self, g_and: Any, g_or: Any) -> tuple[Any, Any]:
        """Adjoints of :meth:`and_or`: the OR adjoint routes entry ∅ separately (spec §6.3)."""
        torch = self.torch
        g = g_or.clone()
        g0 = g[..., 0].clone()
        g[..., 0] = 0.0
        m = g_and.shape[-2]
        out = self.moebius_adjoint(torch.cat([g_and, -g], dim=-2))
        d_and, d_or = out[..., :m, :], out[..., m:, :].flip(-1).contiguous()
        d_or[..., 0] += g0
        return d_and, d_or

    def or_inverse_adjoint(self, g: Any) -> Any:
        """Transpose of the OR inverse f(T) = I(∅) + Σ_{S≠∅, S∩T≠∅} I(S)."""
        total = g.sum(-1, keepdim=True)
        out = total - self.zeta_adjoint(g.flip(-1).contiguous())
        out[..., 0] = total[..., 0]
        return out
