"""The interpreter's networks: attribute function Ψ, linear head h and decoder d (A2.4).

``g(x) = h(Φ(x))`` with ``Φ(x) = Ψ(f_I(x)) ∈ R^J_+`` and ``h`` a linear layer (Dropout(0.01) then
Linear(J→C) with bias). Ψ follows the spec's generic rule for an arbitrary predictor:

* feature maps (N, C, H, W): one 3×3 conv to 64 channels per map, strided so that every map reaches the
  smallest map's size; concatenate channels; 3×3 conv to 64; AdaptiveAvgPool(3×3); Linear(576→J); ReLU;
* anything else (vectors, tokens): the same with an MLP on the flattened tensors;
* both kinds mixed: each map is reduced to its pooled 3×3 summary and fused with the vectors by an MLP.

The decoder mirrors the reference MNIST decoder (Linear → small map → two stride-2 transposed convs) for
images and is an MLP otherwise; its output layer matches the data's range (ReLU for [0, 1], linear else).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
import torch.nn as nn

SPEC_FORMAT = 1


@dataclass
class InterpreterSpec:
    """Everything needed to rebuild an interpreter (saved next to its weights as JSON)."""

    layers: list[str]
    layer_shapes: list[list[int]]  # per-sample shape of each tapped activation
    n_classes: int
    n_attributes: int
    input_shape: list[int]
    modality: str = "tabular"  # "image" when the input is (C, H, W)
    decoder_output: str = "linear"  # "relu" for [0, 1] data, else "linear"
    reconstruction: str = "mse"  # "mse" | "l1"
    width: int = 64
    head_dropout: float = 0.01
    attribute_activation: str = "leaky_relu"  # "leaky_relu" (reference MNIST Ψ, slope 0.01) | "relu"
    input_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    class_names: list[str] | None = None
    mode: str = "post-hoc"  # "post-hoc" | "joint"
    source_model: str | None = None
    output_transform: str = "logits"  # how the predictor's outputs were turned into class logits
    format: int = SPEC_FORMAT

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InterpreterSpec":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def _is_map(shape: Sequence[int]) -> bool:
    """A spatial feature map (C, H, W) with more than one position."""
    return len(shape) == 3 and shape[1] * shape[2] > 1


class AttributeNet(nn.Module):
    """Ψ: hidden activations at the taps → J non-negative attributes."""

    def __init__(self, layer_shapes: Sequence[Sequence[int]], n_attributes: int, width: int = 64,
                 activation: str = "leaky_relu") -> None:
        super().__init__()
        shapes = [tuple(int(d) for d in s) for s in layer_shapes]
        self.maps = [i for i, s in enumerate(shapes) if _is_map(s)]
        self.vecs = [i for i, s in enumerate(shapes) if not _is_map(s)]
        self.branches = nn.ModuleList()
        if self.maps:
            th = min(shapes[i][1] for i in self.maps)
            tw = min(shapes[i][2] for i in self.maps)
            self.target = (th, tw)
        for i, s in enumerate(shapes):
            if i in self.maps:
                stride = (max(1, s[1] // self.target[0]), max(1, s[2] // self.target[1]))
                self.branches.append(nn.Sequential(
                    nn.Conv2d(s[0], width, 3, stride=stride, padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(self.target),  # a no-op when the strides matched the sizes exactly
                ))
            else:
                self.branches.append(nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s), width), nn.ReLU()))
        if not self.vecs:  # all feature maps: the spec's conv fusion
            self.fuse = nn.Sequential(
                nn.Conv2d(width * len(shapes), width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
                nn.Flatten(), nn.Linear(9 * width, n_attributes),
            )
        else:
            n_in = width * len(self.vecs) + 9 * width * len(self.maps)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(3), nn.Flatten())
            self.fuse = nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, n_attributes))
        self.act = nn.LeakyReLU(0.01) if activation == "leaky_relu" else nn.ReLU()

    def forward(self, acts: Sequence[torch.Tensor]) -> torch.Tensor:
        outs = [branch(a) for branch, a in zip(self.branches, acts)]
        if not self.vecs:
            z = self.fuse(torch.cat(outs, dim=1))
        else:
            flat = [self.pool(o) if i in self.maps else o for i, o in enumerate(outs)]
            z = self.fuse(torch.cat(flat, dim=1))
        return self.act(z)


class ImageDecoder(nn.Module):
    """d for (C, H, W) inputs: Linear(J → c0·⌈H/4⌉·⌈W/4⌉) → two ConvT(k3, s2) → crop to H×W."""

    def __init__(self, n_attributes: int, shape: Sequence[int], output: str = "relu") -> None:
        super().__init__()
        c, h, w = (int(d) for d in shape)
        self.h0, self.w0 = math.ceil(h / 4), math.ceil(w / 4)
        self.c0 = max(2, math.ceil(64 / (self.h0 * self.w0)))  # 2×7×7 at 28×28, as in the reference
        self.shape = (c, h, w)
        self.fc = nn.Linear(n_attributes, self.c0 * self.h0 * self.w0)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(self.c0, 8, 3, stride=2, padding=1, output_padding=1), nn.ReLU(),
            nn.ConvTranspose2d(8, c, 3, stride=2, padding=1, output_padding=1),
        )
        self.out = nn.ReLU() if output == "relu" else nn.Identity()

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        z = self.fc(phi).view(-1, self.c0, self.h0, self.w0)
        c, h, w = self.shape
        return self.out(self.up(z)[:, :, :h, :w])


class VectorDecoder(nn.Module):
    """d for any other input: an MLP J → 64 → prod(shape), reshaped to the sample shape."""

    def __init__(self, n_attributes: int, shape: Sequence[int], output: str = "linear", width: int = 64) -> None:
        super().__init__()
        self.shape = tuple(int(d) for d in shape)
        self.net = nn.Sequential(nn.Linear(n_attributes, width), nn.ReLU(), nn.Linear(width, math.prod(self.shape)))
        self.out = nn.ReLU() if output == "relu" else nn.Identity()

    def forward(self, phi: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(phi)).view(-1, *self.shape)


class FlintInterpreter(nn.Module):
    """The interpreter ``(Ψ, h, d)``. ``forward(acts)`` returns ``(g_logits, Φ)``; ``decode(Φ)`` gives d(Φ).

    ``psi`` (a module taking the list of tapped activations, in ``spec.layers`` order) and ``decoder`` (J → input
    shape) may be passed in to override the generic architecture (tests build the spec's perfect interpreter
    this way; such an interpreter is not rebuilt by :func:`load_interpreter`)."""

    def __init__(self, spec: InterpreterSpec, *, psi: nn.Module | None = None,
                 decoder: nn.Module | None = None) -> None:
        super().__init__()
        self.spec = spec
        J, C = spec.n_attributes, spec.n_classes
        self.psi = psi if psi is not None else AttributeNet(spec.layer_shapes, J, spec.width, spec.attribute_activation)
        self.head = nn.Sequential(nn.Dropout(spec.head_dropout), nn.Linear(J, C))
        if decoder is not None:
            self.decoder = decoder
        elif spec.modality == "image" and len(spec.input_shape) == 3:
            self.decoder = ImageDecoder(J, spec.input_shape, spec.decoder_output)
        else:
            self.decoder = VectorDecoder(J, spec.input_shape, spec.decoder_output)

    @property
    def linear(self) -> nn.Linear:
        return self.head[1]

    @property
    def W(self) -> torch.Tensor:
        """The J×C matrix of A3.1 (``W[j, c] = linear.weight[c, j]``)."""
        return self.linear.weight.detach().T

    def attributes(self, acts: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.psi(list(acts))

    def forward(self, acts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.attributes(acts)
        return self.head(phi), phi

    def decode(self, phi: torch.Tensor) -> torch.Tensor:
        return self.decoder(phi)


class FlatActivationsInterpreter(nn.Module):
    """The interpreter as a single-input model for MLflow: the tapped activations flattened and concatenated
    in ``spec.layers`` order, (n, Σ prod(shape)) → the interpreter's class logits (n, C)."""

    def __init__(self, interpreter: FlintInterpreter) -> None:
        super().__init__()
        self.interpreter = interpreter
        self.shapes = [tuple(s) for s in interpreter.spec.layer_shapes]
        self.sizes = [math.prod(s) for s in self.shapes]

    def forward(self, flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, self.sizes, dim=1)
        acts = [p.reshape(-1, *s) for p, s in zip(parts, self.shapes)]
        return self.interpreter(acts)[0]


def flatten_activations(acts: Sequence[torch.Tensor]) -> torch.Tensor:
    """The input layout of :class:`FlatActivationsInterpreter`."""
    return torch.cat([a.reshape(len(a), -1) for a in acts], dim=1)
