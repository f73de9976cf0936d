"""Fast subset-lattice transforms for AND (Harsanyi) and OR interactions, O(n·2ⁿ), no dense matrices.

Convention (spec §2.1): a subset T ⊆ {0..n-1} is the integer whose bit j is set iff variable j ∈ T, so index
0 is ∅ and index 2ⁿ-1 is N. Every function works on the last axis of a float64 array of length 2ⁿ and
broadcasts over leading axes (several models / samples at once).

* ``moebius``   : I_and(S) = Σ_{T⊆S} (-1)^{|S|-|T|} f(T)          (Eq. 1; AND interactions of f)
* ``zeta``      : g(T) = Σ_{S⊆T} I(S)                              (inverse of moebius, universal matching)
* ``or_transform``: I_or(S) = -Σ_{T⊆S} (-1)^{|S|-|T|} f(N\\T), I_or(∅) = f(∅)   (Eq. 2)
* ``or_inverse``: f(T) = I_or(∅) + Σ_{S≠∅, S∩T≠∅} I_or(S)
and the adjoints (transposes) used by the gradient-based solvers.
"""

from __future__ import annotations

import numpy as np


def n_of(length: int) -> int:
    """n such that 2ⁿ == length; raises ValueError otherwise."""
    n = int(length).bit_length() - 1
    if length < 1 or (1 << n) != length:
        raise ValueError(f"the last axis must have length 2**n, got {length}")
    return n


def _butterfly(f: np.ndarray, *, sign: float, lower_from_upper: bool) -> np.ndarray:
    """n in-place butterfly passes on a copy of ``f``. ``lower_from_upper=False`` updates the entries whose
    bit j is set from their partner without it (moebius/zeta); True does the transpose (adjoints)."""
    out = np.array(f, dtype=np.float64, copy=True)
    n = n_of(out.shape[-1])
    lead = out.shape[:-1]
    for j in range(n):
        view = out.reshape(*lead, 1 << (n - j - 1), 2, 1 << j)
        if lower_from_upper:
            view[..., 0, :] += sign * view[..., 1, :]
        else:
            view[..., 1, :] += sign * view[..., 0, :]
    return out


def moebius(f: np.ndarray) -> np.ndarray:
    """AND interactions (Harsanyi dividends) of the set function ``f``."""
    return _butterfly(f, sign=-1.0, lower_from_upper=False)


def zeta(i: np.ndarray) -> np.ndarray:
    """Inverse of :func:`moebius`: g(T) = Σ_{S⊆T} i(S)."""
    return _butterfly(i, sign=1.0, lower_from_upper=False)


def moebius_adjoint(g: np.ndarray) -> np.ndarray:
    """Transpose of :func:`moebius` (gradient of ⟨g, moebius(f)⟩ with respect to f)."""
    return _butterfly(g, sign=-1.0, lower_from_upper=True)


def zeta_adjoint(g: np.ndarray) -> np.ndarray:
    """Transpose of :func:`zeta`."""
    return _butterfly(g, sign=1.0, lower_from_upper=True)


def complement(f: np.ndarray) -> np.ndarray:
    """f(N \\ T) as a function of T: complementing the bitmask reverses the last axis."""
    return np.asarray(f)[..., ::-1]


def or_transform(f: np.ndarray) -> np.ndarray:
    """OR interactions of ``f`` (spec §2.5): -moebius of the complemented function, entry ∅ set to f(∅)."""
    f = np.asarray(f, dtype=np.float64)
    out = -moebius(complement(f))
    out[..., 0] = f[..., 0]
    return out


def or_transform_adjoint(g: np.ndarray) -> np.ndarray:
    """Transpose of :func:`or_transform`. Entry 0 of the output was overwritten by f(∅), so its adjoint is
    routed to f(∅) directly and zeroed before the transposed chain (spec §6.3)."""
    g = np.array(g, dtype=np.float64, copy=True)
    g0 = g[..., 0].copy()
    g[..., 0] = 0.0
    out = np.ascontiguousarray(complement(moebius_adjoint(-g)))
    out[..., 0] += g0
    return out


def or_inverse(i_or: np.ndarray) -> np.ndarray:
    """Inverse of :func:`or_transform`: f(T) = I(∅) + Σ_{S≠∅, S∩T≠∅} I(S)."""
    i_or = np.asarray(i_or, dtype=np.float64)
    rest = i_or.copy()
    rest[..., 0] = 0.0
    total = rest.sum(axis=-1, keepdims=True)
    inside_complement = complement(zeta(rest))  # Σ_{S ⊆ N\T, S≠∅} I(S)
    return i_or[..., :1] + total - inside_complement


def split_outputs(v: np.ndarray, gamma: np.ndarray, q: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """v_and = ½(v+q) + γ and v_or = ½(v+q) - γ (spec §2.6/§2.7, q = -ε)."""
    base = 0.5 * (np.asarray(v, dtype=np.float64) + q)
    return base + gamma, base - gamma


def and_or_interactions(v: np.ndarray, gamma: np.ndarray, q: np.ndarray | float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(I_and, I_or) of ``v`` under the split ``gamma`` and error term ``q``."""
    v_and, v_or = split_outputs(v, gamma, q)
    return moebius(v_and), or_transform(v_or)


def reconstruct(i_and: np.ndarray, i_or: np.ndarray) -> np.ndarray:
    """Theorem 2 (universal matching): v(x_T) rebuilt from the AND and OR interactions, for every T."""
    return zeta(i_and) + or_inverse(i_or)


def merge_singletons(i_and: np.ndarray, i_or: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold OR{i} into AND{i} and OR{∅} into AND{∅} (spec §2.10 step 1): they are the same pattern, and the
    L1 objective leaves their split undetermined. Returns copies."""
    i_and = np.array(i_and, dtype=np.float64, copy=True)
    i_or = np.array(i_or, dtype=np.float64, copy=True)
    n = n_of(i_and.shape[-1])
    low = np.array([0] + [1 << j for j in range(n)])
    i_and[..., low] += i_or[..., low]
    i_or[..., low] = 0.0
    return i_and, i_or


def popcounts(n: int) -> np.ndarray:
    """|S| for every subset index 0..2ⁿ-1."""
    idx = np.arange(1 << n, dtype=np.int64)
    bits = (idx[:, None] >> np.arange(n)) & 1
    return bits.sum(axis=1) if n else np.zeros(1, dtype=np.int64)


def subset_bits(n: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Boolean (len(indices), n) table: row k has bit j set iff variable j is in subset k."""
    idx = np.arange(1 << n, dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64)
    return ((idx[:, None] >> np.arange(n)) & 1).astype(bool)


def bitreverse(k: int | np.ndarray, n: int) -> np.ndarray:
    """Map our index (bit j ⇔ variable j) to the reference code's MSB-first row and back (an involution,
    spec O17)."""
    k = np.asarray(k, dtype=np.int64)
    out = np.zeros_like(k)
    for j in range(n):
        out |= ((k >> j) & 1) << (n - 1 - j)
    return out


# ------------------------------------------------------------------------------------------ dense (tests)
def dense_and_matrix(n: int) -> np.ndarray:
    """A[S,T] = (-1)^{|S|-|T|}·[T⊆S] (spec §2.6). For tests only: O(4ⁿ) memory."""
    if n > 10:
        raise ValueError("dense matrices are for tests with n <= 10")
    idx = np.arange(1 << n)
    sub = (idx[None, :] & ~idx[:, None]) == 0  # T ⊆ S  (row S, column T)
    pc = popcounts(n)
    sign = np.where((pc[:, None] - pc[None, :]) % 2 == 0, 1.0, -1.0)
    return np.where(sub, sign, 0.0)


def dense_or_matrix(n: int) -> np.ndarray:
    """B[S,T] = -(-1)^{|S|-(n-|T|)}·[N\\S ⊆ T] for S≠∅, row ∅ = e_∅ (spec §2.6). For tests only."""
    if n > 10:
        raise ValueError("dense matrices are for tests with n <= 10")
    full = (1 << n) - 1
    idx = np.arange(1 << n)
    pc = popcounts(n)
    comp_s = full ^ idx
    cover = (comp_s[:, None] & ~idx[None, :]) == 0  # N\S ⊆ T
    sign = np.where((pc[:, None] - (n - pc[None, :])) % 2 == 0, 1.0, -1.0)
    out = np.where(cover, -sign, 0.0)
    out[0, :] = 0.0
    out[0, 0] = 1.0
    return out
