"""The base class every explanation method subclasses, and the context the host hands to it.

A method declares what it needs (``requires``), its configuration as a pydantic model (``Config``), and
implements ``explain(ctx)``. The host checks the requirements against the loaded model and data before
calling it, so ``explain`` can assume them; anything else wrong with its inputs is a
:class:`~governance.contract.errors.MethodError` with a message for the user.
"""

from __future__ import annotations

import abc
import enum
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:  # pragma: no cover
    from governance.contract.dataset import Dataset
    from governance.contract.model import LoadedModel
    from governance.contract.results import Explanation


class Requirement(str, enum.Enum):
    """What a method needs from the model and the run."""

    FORWARD = "forward"  # batched predict (every loaded model has it)
    GRADIENTS = "gradients"  # a differentiable torch view of the model
    ACTIVATIONS = "activations"  # hidden-layer activations through the torch view
    PARAMETERS = "parameters"  # the model's weight tensors
    PEERS = "peers"  # compares with other models when there are any (earlier versions by default): only these methods get ctx.peers
    LABELS = "labels"  # targets in the dataset


class MethodConfig(BaseModel):
    """Base for a method's configuration: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Method(abc.ABC):
    """An explanation method. Subclass it, set the class attributes, implement :meth:`explain`."""

    #: unique name, used by ``--methods``, artifact paths and report stamps (the entry-point name).
    name: ClassVar[str]
    #: the method implementation's version, stamped into every result.
    version: ClassVar[str] = "0.0.0"
    #: heading of the report section.
    title: ClassVar[str] = ""
    #: one paragraph for the report and ``governance plugins``.
    description: ClassVar[str] = ""
    #: the publication the method implements (URL or citation).
    reference: ClassVar[str] = ""
    requires: ClassVar[frozenset[Requirement]] = frozenset({Requirement.FORWARD})
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: Jinja2 template of the report section, as ``"package.module:relative/path.html.j2"`` or None.
    report_template: ClassVar[str | None] = None

    @classmethod
    def can_explain(cls, *, model: "LoadedModel", data: "Dataset") -> str | None:
        """Return None when this method can run on ``model``/``data``, else the reason it cannot.

        The default checks ``requires``; override to add method-specific conditions, calling super.
        """
        if Requirement.GRADIENTS in cls.requires or Requirement.ACTIVATIONS in cls.requires:
            if not model.has_gradients:
                why = model.torch_unavailable_reason or "the model has no torch view"
                return f"needs gradients or hidden activations, but {why}"
        if Requirement.PARAMETERS in cls.requires and not model.parameters():
            why = getattr(model, "no_parameters_reason", None)
            return f"needs the model's weights, but {why}" if why else \
                "needs the model's weights, which this runtime does not expose"
        if Requirement.LABELS in cls.requires and data.y is None:
            return "needs labels in the dataset (pass --data with a 'y' array or a target column)"
        return None

    @classmethod
    def parse_config(cls, raw: dict[str, Any] | None) -> MethodConfig:
        """Validate user configuration into ``cls.Config``; raises ConfigError naming the bad keys, or a
        count-like setting that cannot fit in memory (:mod:`governance.contract.bounds`)."""
        from pydantic import ValidationError

        from governance.contract.errors import ConfigError

        from governance.contract.bounds import check_memory_bounds

        try:
            cfg = cls.Config(**(raw or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors()
            )
            fields = ", ".join(sorted(cls.Config.model_fields)) or "none"
            raise ConfigError(
                f"invalid configuration for method '{cls.name}': {problems}",
                hint=f"valid keys for '{cls.name}' are: {fields}",
            ) from None
        check_memory_bounds(cls.name, cfg)
        return cfg

    @abc.abstractmethod
    def explain(self, ctx: "MethodContext", **kwargs: Any) -> "Explanation":
        """Compute the explanation. Keyword-only extras are reserved for forward compatibility."""


@dataclass
class MethodContext:
    """Everything a method may use. ``workdir`` is the method's own folder: figures and files written
    there are logged to MLflow under ``explanations/<method>/``."""

    model: "LoadedModel"
    data: "Dataset"
    config: MethodConfig
    seed: int
    workdir: Path
    peers: Sequence["LoadedModel"] = ()
    device: str = "cpu"
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("governance.method"))
    progress: Callable[[float, str], None] = lambda fraction, message="": None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.rng = np.random.default_rng(self.seed)

    def torch_generator(self):  # -> torch.Generator
        """A torch generator seeded from the run seed (for reproducible sampling on the torch side)."""
        import torch

        g = torch.Generator(device="cpu")
        g.manual_seed(int(self.seed))
        return g

    def save_figure(self, fig: Any, name: str, *, dpi: int = 150) -> Path:
        """Save a matplotlib figure as ``<workdir>/<name>.png``, close it, and return the path."""
        import matplotlib.pyplot as plt

        path = self.workdir / f"{name}.png"
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        return path
