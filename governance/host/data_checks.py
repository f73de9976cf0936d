"""Checks on the samples a run explains, made before anything is written: a bad file or a bad array is a
:class:`DataError` naming the problem and the fix, never a numpy error from deep inside a method."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from governance.contract.errors import DataError

_MAGIC = {".npz": (b"PK\x03\x04", b"PK\x05\x06"), ".npy": (b"\x93NUMPY",)}
_KINDS = {"U": "text (strings)", "S": "bytes", "O": "Python objects", "M": "dates", "m": "time spans",
          "V": "structured records"}
#: rows whose model outputs are probed for NaN/inf before a run starts (the largest inputs first)
PROBE_ROWS = 32


def check_container(path: Path) -> None:
    """An .npz must be a zip archive and an .npy a numpy file; otherwise numpy tries to unpickle it and
    its error talks about ``allow_pickle``, which must never be the fix for untrusted data."""
    magics = _MAGIC.get(path.suffix.lower())
    if not magics:
        return
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not any(head.startswith(m) for m in magics):
        what = "a zip archive made by np.savez" if path.suffix.lower() == ".npz" else "an array saved by np.save"
        raise DataError(f"{path} is not {what} (its first bytes are {head[:8]!r})",
                        hint="save the samples with np.savez(path, X=X, y=y); governance never unpickles data files")


def pickle_refused(path: Path, exc: ValueError) -> DataError | None:
    """numpy's refusal to load an object array, reworded (the fix is numeric arrays, not allow_pickle)."""
    if "allow_pickle" not in str(exc):
        return None
    return DataError(f"{path} holds an object array, which can only be read by unpickling it; governance never "
                     "unpickles data files", hint="save numeric arrays: np.savez(path, X=X.astype('float32'), y=y)")


def check_values(X: Any, source: str) -> np.ndarray:
    """The inputs must be real numbers (or booleans): text, objects and complex numbers are refused by name
    instead of being cast (complex values would silently lose their imaginary part)."""
    X = np.asarray(X)
    kind = X.dtype.kind
    if kind in _KINDS:
        raise DataError(f"the inputs from {source} are {_KINDS[kind]} (dtype {X.dtype}), not numbers",
                        hint="encode the features as numbers the way the model was trained and save them as float32")
    if kind == "c":
        raise DataError(f"the inputs from {source} are complex numbers (dtype {X.dtype}); the model takes real "
                        "inputs and governance does not drop imaginary parts silently",
                        hint="pass what the model was trained on, e.g. X.real or np.abs(X), as float32")
    return X


def check_magnitude(X: np.ndarray, source: str) -> None:
    """Finite values whose squares overflow the input dtype (e.g. 1e38 in float32) make gradients, norms and
    distances infinite inside every method: refuse them before the run starts."""
    if not np.issubdtype(X.dtype, np.floating) or X.size == 0:
        return
    limit = float(np.sqrt(np.finfo(X.dtype).max))
    peak = float(np.max(np.abs(X)))
    if peak > limit:
        n = int(np.count_nonzero(np.abs(X) > limit))
        raise DataError(
            f"the inputs from {source} reach |x| = {peak:.3g} ({n} value(s) above {limit:.3g}); squaring them "
            f"overflows {X.dtype} (largest {np.finfo(X.dtype).max:.3g}), so gradients, norms and distances "
            "become infinite", hint="scale or standardise the inputs the way the model was trained")


def check_outputs(model: Any, X: np.ndarray, source: str) -> None:
    """Run the model on the largest-magnitude samples: NaN/inf outputs, or a model that crashes on this data,
    fail here rather than in every method of a run that was already created."""
    flat = np.abs(X.reshape(len(X), -1).astype(np.float64, copy=False)) if X.size else np.zeros((len(X), 1))
    rows = np.argsort(-flat.max(axis=1), kind="stable")[:PROBE_ROWS]
    try:
        out = np.asarray(model.predict(X[np.sort(rows)]))
    except Exception as exc:  # runtimes raise many types on inputs they cannot take
        raise DataError(f"{model.info.display_name} fails on the samples from {source}: {type(exc).__name__}: "
                        f"{str(exc)[:300]}", hint="check that the data matches the model's input "
                        "(`governance inspect MODEL_URI` shows its signature)") from exc
    if np.issubdtype(out.dtype, np.number) and not np.all(np.isfinite(out)):
        bad = int(np.count_nonzero(~np.isfinite(out.reshape(len(out), -1)).all(axis=1)))
        raise DataError(f"{model.info.display_name} returns NaN or infinite outputs on {bad} of {len(rows)} "
                        f"samples from {source} (the largest inputs were probed)",
                        hint="check the inputs' scale and preprocessing; explanations of non-finite outputs are undefined")
