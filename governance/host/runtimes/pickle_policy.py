"""Whether governance may unpickle a model: never, unless someone who owns the machine said so.

Loading a pickle runs whatever code its author put into it, so anyone who can register a model could run
code on the governance host (inside ``governance inspect``, or the ``serve`` worker after one webhook).
Pickle is therefore refused by default. The opt-ins, highest precedence first:

1. ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` (MLflow's own switch) refuses pickle whatever else says;
2. ``--trust-pickle`` on the command line (RunSpec ``trust_pickle``, ``governance.load(trust_pickle=True)``),
   then ``GOVERNANCE_TRUST_PICKLE=1``/``0`` in the environment (the service sets this from its own
   ``--trust-pickle`` for every job);
3. ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true`` set explicitly (MLflow's default, when it is unset, is not
   counted as consent);
4. ``trust_pickle = true`` in the settings file.

When pickle is not trusted, ``pt2`` archives are loaded with MLflow's switch set to false, so MLflow checks
that the archive holds no pickled records (``torch.export.load`` unpickles some records otherwise).
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Iterator

from governance.contract.errors import ConfigError, ModelLoadError

TRUST_ENV = "GOVERNANCE_TRUST_PICKLE"
MLFLOW_ENV = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
OPT_IN = (f"--trust-pickle (or {TRUST_ENV}=1, or trust_pickle = true in the settings file) if you trust everyone "
          "who can register models in this store")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_ENV_LOCK = threading.Lock()


@dataclass(frozen=True)
class PickleDecision:
    allowed: bool
    because: str  # the switch that decided, e.g. "GOVERNANCE_TRUST_PICKLE=1"


def _flag(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is neither true nor false", hint=f"set {name} to 1/true or 0/false")


def pickle_decision(explicit: bool | None = None) -> PickleDecision:
    """Apply the precedence above to the current environment and settings file. ``explicit=True`` is the
    command's own ``--trust-pickle`` (RunSpec ``trust_pickle``); None when it was not given."""
    mlflow_switch = _flag(MLFLOW_ENV)
    if mlflow_switch is False:
        return PickleDecision(False, f"{MLFLOW_ENV}=false")
    if explicit is not None:
        return PickleDecision(bool(explicit), "--trust-pickle" if explicit else "trust_pickle=False")
    own = _flag(TRUST_ENV)
    if own is not None:
        return PickleDecision(own, f"{TRUST_ENV}={os.environ[TRUST_ENV].strip()}")
    if mlflow_switch is True:
        return PickleDecision(True, f"{MLFLOW_ENV}=true")
    from governance.host.settings import setting

    value = setting("trust_pickle")
    if value is not None and not isinstance(value, bool):
        raise ConfigError(f"the settings file's trust_pickle must be true or false, not {value!r}",
                          hint="write trust_pickle = true (or remove the line)")
    if value:
        return PickleDecision(True, "trust_pickle = true in the settings file")
    return PickleDecision(False, "the default")


PT2_FIX = ("re-log the model with mlflow.pytorch.log_model(..., serialization_format='pt2') (MLflow's default "
           "outside Databricks)")


def refusal(display_name: str, what: str, decision: PickleDecision, fix: str = PT2_FIX) -> ModelLoadError:
    """The error for a model that would have to be unpickled; ``fix`` says how to log it without pickle."""
    hint = fix
    if decision.because.startswith(MLFLOW_ENV):
        hint += f"; {MLFLOW_ENV}=false is set here and governance honours it over every other switch"
    else:
        hint += f", or pass {OPT_IN}"
    return ModelLoadError(
        f"{display_name} {what}; unpickling runs any code its author put into it, so governance refuses "
        f"pickle unless you opt in (refused by {decision.because})", hint=hint)


def tabular_pickle_file(flavor_conf: dict) -> str | None:
    """The pickled file of an sklearn/lightgbm/xgboost flavor (``model.pkl`` under pickle or cloudpickle), or
    None for a format that is not unpickled (skops, LightGBM's ``model.lgb``, XGBoost's ``model.ubj``/json)."""
    name = str(flavor_conf.get("pickled_model") or flavor_conf.get("data") or "")
    fmt = str(flavor_conf.get("serialization_format") or "").lower()
    if fmt in ("pickle", "cloudpickle") or name.endswith((".pkl", ".pickle")):
        return name or "model.pkl"
    return None


@contextlib.contextmanager
def mlflow_pickle_switch(allowed: bool) -> Iterator[None]:
    """Set MLflow's own switch to false around a load when pickle is not trusted (MLflow then also checks
    ``pt2`` archives for pickled records); leave the environment alone otherwise."""
    if allowed:
        yield
        return
    with _ENV_LOCK:
        saved = os.environ.get(MLFLOW_ENV)
        os.environ[MLFLOW_ENV] = "false"
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop(MLFLOW_ENV, None)
            else:
                os.environ[MLFLOW_ENV] = saved
