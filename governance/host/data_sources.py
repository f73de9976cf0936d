"""Load the samples a run explains: ``--data`` (npz, csv, parquet), the model's logged evaluation data,
or its input example. Every path ends in a checked :class:`Dataset` or a DataError that says what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from governance.contract.dataset import Dataset
from governance.contract.errors import DataError
from governance.contract.model import LoadedModel, ModelVersionInfo
from governance.host.data_checks import check_container, check_magnitude, check_outputs, check_values, pickle_refused
from governance.host.tracking import resolve_tracking_uri

TARGET_COLUMNS = ("target", "label", "y", "class")


def load_dataset(spec: str | Path | None, model: LoadedModel, *, target: str | None = None,
                 tracking_uri: str | None = None, download_dir: Path | None = None) -> Dataset:
    """Resolve the data for ``model``. ``spec`` is a path, or None to use what the registry has."""
    if spec is not None:
        ds = _from_file(Path(spec), model, target)
    else:
        ds = _from_registry(model.info, model, tracking_uri, download_dir)
    return validate(ds, model)


def validate(ds: Dataset, model: LoadedModel) -> Dataset:
    """Shape, dtype and finiteness checks; the dataset comes back cast to the model's input dtype."""
    if len(ds) == 0:
        raise DataError(f"the dataset from {ds.source} is empty", hint="pass --data with at least one sample")
    ds.X = model.check_input(check_values(ds.X, ds.source))
    if np.issubdtype(ds.X.dtype, np.floating):
        bad = ~np.isfinite(ds.X)
        if bad.any():
            rows = np.unique(np.nonzero(bad.reshape(len(ds.X), -1))[0])
            raise DataError(
                f"the dataset from {ds.source} contains {int(bad.sum())} NaN/infinite value(s) in "
                f"{len(rows)} sample(s) (first rows: {', '.join(map(str, rows[:5]))})",
                hint="impute or drop those rows before explaining; attributions of NaN inputs are undefined",
            )
    check_magnitude(ds.X, ds.source)
    check_outputs(model, ds.X, ds.source)
    ds.baseline = np.asarray(ds.baseline, dtype=ds.X.dtype)
    return ds


def _modality(shape: tuple[int, ...]) -> str:
    return "image" if len(shape) >= 3 or (len(shape) == 2 and min(shape) > 1) else "tabular"


def _from_file(path: Path, model: LoadedModel, target: str | None) -> Dataset:
    if not path.exists():
        raise DataError(f"data file {path} does not exist", hint="check the --data path")
    suffix = path.suffix.lower()
    if path.is_dir():
        raise DataError(f"data path {path} is a folder", hint="pass --data with a .npz, .npy, .csv or .parquet file")
    check_container(path)
    try:
        if suffix == ".npz":
            return _from_npz(path)
        if suffix == ".npy":
            X = check_values(np.load(path, allow_pickle=False), str(path))
            return Dataset(X=X, modality=_modality(X.shape[1:]), source=str(path))
        if suffix in (".csv", ".parquet", ".pq"):
            return _from_table(path, model, target)
    except DataError:
        raise
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text", hint="save the table as UTF-8 CSV (or use .parquet)") from None
    except ValueError as exc:
        raise pickle_refused(path, exc) or DataError(f"cannot read {path}: {exc}",
                                                     hint="check the file is a valid npz/csv/parquet file") from None
    except Exception as exc:
        raise DataError(f"cannot read {path}: {type(exc).__name__}: {exc}",
                        hint="check the file is a valid npz/csv/parquet file") from exc
    raise DataError(f"unsupported data format '{suffix}' ({path})", hint="use .npz (X, y), .npy, .csv or .parquet")


def _from_npz(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as npz:
        keys = list(npz.keys())
        xkey = next((k for k in ("X", "x", "inputs", "data") if k in keys), keys[0] if len(keys) == 1 else None)
        if xkey is None:
            raise DataError(f"{path} has arrays {keys} but none named X",
                            hint="save the inputs as X (and labels as y): np.savez(path, X=X, y=y)")
        X = check_values(npz[xkey], str(path))
        y = next((npz[k] for k in ("y", "Y", "labels", "target") if k in keys), None)
        names = [str(v) for v in npz["feature_names"]] if "feature_names" in keys else None
        classes = [str(v) for v in npz["class_names"]] if "class_names" in keys else None
    if y is not None and len(y) != len(X):
        raise DataError(f"{path}: {len(X)} samples in X but {len(y)} labels in y", hint="save matching arrays")
    return Dataset(X=X, y=y, feature_names=names, class_names=classes, modality=_modality(X.shape[1:]),
                   source=str(path))


def _from_table(path: Path, model: LoadedModel, target: str | None) -> Dataset:
    import pandas as pd

    if path.suffix.lower() == ".csv":
        try:
            df = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise DataError(f"{path} is empty", hint="pass a CSV with a header line and one row per sample") from None
    else:
        try:
            df = pd.read_parquet(path)
        except ImportError as exc:
            raise DataError("reading parquet needs pyarrow", hint="pip install 'governance[parquet]'") from exc
    if target is not None and target not in df.columns:
        raise DataError(f"target column '{target}' is not in {path}",
                        hint=f"columns: {', '.join(map(str, df.columns[:30]))}")
    if len(df) == 0:
        raise DataError(f"{path} has a header ({', '.join(map(str, df.columns[:10]))}) but no rows",
                        hint="pass a table with one row per sample")
    tcol = target or next((c for c in df.columns if str(c).lower() in TARGET_COLUMNS), None)
    y = df.pop(tcol).to_numpy() if tcol is not None else None
    wanted = _signature_columns(model.info)
    if wanted and all(c in df.columns for c in wanted):
        df = df[wanted]
    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise DataError(f"non-numeric column(s) in {path}: {', '.join(map(str, non_numeric[:10]))}",
                        hint="encode them numerically as the model expects, or drop them (and name the "
                        "label column with --target)")
    return Dataset(X=df.to_numpy(dtype=np.float32), y=y, feature_names=[str(c) for c in df.columns],
                   modality="tabular", source=str(path))


def _signature_columns(info: ModelVersionInfo) -> list[str] | None:
    inputs = (info.signature or {}).get("inputs") or []
    names = [i.get("name") for i in inputs if i.get("type") != "tensor"]
    return names if names and all(names) else None


def _from_registry(info: ModelVersionInfo, model: LoadedModel, tracking_uri: str | None,
                   download_dir: Path | None) -> Dataset:
    """A ``governance.data_uri`` version tag, the source run's ``governance/eval.npz`` artifact, a file-backed
    dataset logged on the source run, or the model's input example, in that order."""
    tried = []
    uri = info.tags.get("governance.data_uri")
    if info.run_id and tracking_uri and not uri:
        uri = _run_eval_artifact(info.run_id, tracking_uri) or _run_logged_dataset(info.run_id, tracking_uri)
    if uri:
        import mlflow.artifacts

        from governance.host.tracking import pinned_store

        try:
            with pinned_store(tracking_uri or resolve_tracking_uri(None)):
                local = mlflow.artifacts.download_artifacts(artifact_uri=uri,
                                                            dst_path=str(download_dir) if download_dir else None)
            ds = _from_file(Path(local), model, None)
            ds.source = uri
            return ds
        except DataError:
            raise
        except Exception as exc:
            tried.append(f"{uri} ({type(exc).__name__})")
    if info.input_example_path is not None:
        from mlflow.models import Model

        try:
            X = np.asarray(Model.load(str(info.local_path)).load_input_example(str(info.local_path)))
            X = check_values(X, f"the input example of {info.display_name}")
            ds = Dataset(X=X, modality=_modality(X.shape[1:]), source=f"input example of {info.display_name}")
            ds.notes.append(f"only the model's logged input example ({len(X)} samples) was available: "
                            "explanations and quality metrics rest on very few samples")
            return ds
        except Exception as exc:
            tried.append(f"input example ({type(exc).__name__}: {exc})")
    raise DataError(
        f"no data to explain {info.display_name} with" + (f" (tried: {'; '.join(tried)})" if tried else ""),
        hint="pass --data FILE (.npz with X[, y], .csv or .parquet), or log the evaluation data as the source "
        "run's artifact governance/eval.npz, or log the model with an input_example",
    )


def _run_logged_dataset(run_id: str, tracking_uri: str) -> str | None:
    """The first dataset logged on the source run (``mlflow.log_input``) whose source is a file we can read."""
    from governance.host.tracking import client

    try:
        run = client(tracking_uri).get_run(run_id)
        inputs = run.inputs.dataset_inputs if run.inputs else []
    except Exception:
        return None
    import json as _json

    for di in inputs:
        try:
            source = _json.loads(di.dataset.source)
        except Exception:
            continue
        for key in ("uri", "path", "url"):
            value = source.get(key) if isinstance(source, dict) else None
            if isinstance(value, str) and Path(value.split("://")[-1]).suffix.lower() in (".npz", ".npy", ".csv",
                                                                                           ".parquet", ".pq"):
                return value
    return None


def _run_eval_artifact(run_id: str, tracking_uri: str) -> str | None:
    from governance.host.tracking import client

    try:
        names = {a.path for a in client(tracking_uri).list_artifacts(run_id, "governance")}
    except Exception:
        return None
    return f"runs:/{run_id}/governance/eval.npz" if "governance/eval.npz" in names else None
