"""Resolve a model reference to an immutable :class:`ModelVersionInfo`: registry lookup, download, hashes.

Accepted forms: ``models:/name/3``, ``models:/name@alias``, ``models:/name/latest``, ``models:/m-<id>``,
``runs:/<run_id>/<path>``, a local ``.onnx`` file, or a local MLflow model folder (with ``MLmodel``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from governance.contract.errors import ModelLoadError, ModelResolutionError, TrackingError
from governance.contract.model import ModelVersionInfo


@dataclass(frozen=True)
class ModelRef:
    kind: str  # registry | alias | latest | model_id | run | file | folder
    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    path: str | None = None


_FORMS = "models:/NAME/VERSION, models:/NAME@ALIAS, models:/NAME/latest, runs:/RUN_ID/PATH, or a local .onnx file"


def parse_model_uri(uri: str) -> ModelRef:
    """Parse without touching any store; raises ModelResolutionError naming the accepted forms."""
    uri = uri.strip()
    if uri.startswith("models:/"):
        rest = uri[len("models:/"):].strip("/")
        if re.fullmatch(r"m-[0-9a-f]{32}", rest):
            return ModelRef("model_id", uri, path=rest)
        if "@" in rest and "/" not in rest.split("@", 1)[1]:
            name, alias = rest.rsplit("@", 1)
            if name and alias:
                return ModelRef("alias", uri, name=name, alias=alias)
        if "/" in rest:
            name, version = rest.rsplit("/", 1)
            if name and version == "latest":
                return ModelRef("latest", uri, name=name)
            if name and version.isdigit():
                return ModelRef("registry", uri, name=name, version=version)
            raise ModelResolutionError(f"'{version}' in {uri} is not a version number",
                                       hint=f"use {_FORMS}")
        raise ModelResolutionError(f"{uri} names no version or alias", hint=f"use {_FORMS}")
    if uri.startswith("runs:/"):
        rest = uri[len("runs:/"):].strip("/")
        run_id, _, path = rest.partition("/")
        if not run_id or not path:
            raise ModelResolutionError(f"{uri} needs a run id and an artifact path", hint=f"use {_FORMS}")
        return ModelRef("run", uri, run_id=run_id, path=path)
    p = Path(uri).expanduser()
    if p.suffix == ".onnx":
        if not p.is_file():
            raise ModelResolutionError(f"ONNX file {p} does not exist", hint="check the path")
        return ModelRef("file", uri, path=str(p.resolve()))
    if p.is_dir() and (p / "MLmodel").is_file():
        return ModelRef("folder", uri, path=str(p.resolve()))
    raise ModelResolutionError(f"cannot interpret {uri!r} as a model reference", hint=f"use {_FORMS}")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` (relative POSIX paths), external ONNX weight files included."""
    root = Path(root)
    if root.is_file():
        return {root.name: sha256_file(root)}
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _mlflow_error_code(exc: Exception) -> str | None:
    return getattr(exc, "error_code", None)


def _available_versions(client: Any, name: str) -> str:
    try:
        versions = sorted(int(mv.version) for mv in client.search_model_versions(f"name='{name}'"))
        rm = client.get_registered_model(name)
        aliases = sorted(getattr(rm, "aliases", {}) or {})
    except Exception:
        return ""
    text = f"versions of '{name}': {', '.join(map(str, versions)) or 'none'}"
    if aliases:
        text += f"; aliases: {', '.join(aliases)}"
    return text


def _registered_names(client: Any, limit: int = 20) -> str:
    try:
        names = [rm.name for rm in client.search_registered_models(max_results=limit)]
    except Exception:
        return ""
    return ", ".join(names) if names else "none"


def _lookup_version(client: Any, ref: ModelRef) -> Any:
    """The MLflow ModelVersion for a registry reference, with errors that list what does exist."""
    from mlflow.exceptions import MlflowException

    try:
        if ref.kind == "alias":
            return client.get_model_version_by_alias(ref.name, ref.alias)
        if ref.kind == "latest":
            versions = client.search_model_versions(f"name='{ref.name}'")
            if not versions:
                from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

                raise MlflowException(f"Registered Model with name={ref.name} not found",
                                      error_code=RESOURCE_DOES_NOT_EXIST)
            newest = max(versions, key=lambda mv: int(mv.version))
            return client.get_model_version(ref.name, newest.version)
        return client.get_model_version(ref.name, ref.version)
    except MlflowException as exc:
        code = _mlflow_error_code(exc)
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            exists = True
            try:
                client.get_registered_model(ref.name)
            except MlflowException:
                exists = False
            if not exists:
                raise ModelResolutionError(
                    f"no registered model named '{ref.name}' in this tracking store",
                    hint=f"registered models here: {_registered_names(client)}; or point --tracking-uri at "
                    "the store that holds it",
                ) from None
            what = f"alias '@{ref.alias}'" if ref.kind == "alias" else f"version {ref.version}"
            raise ModelResolutionError(f"registered model '{ref.name}' has no {what}",
                                       hint=_available_versions(client, ref.name)) from None
        raise TrackingError(f"the tracking store failed while resolving {ref.uri}: {exc}",
                            hint="check the tracking server") from exc


def lookup_version(client: Any, ref: ModelRef) -> Any:
    """The MLflow ModelVersion a registry reference (version, alias, latest) names now; errors list what exists."""
    return _lookup_version(client, ref)


def _read_mlmodel(folder: Path) -> dict[str, Any]:
    import yaml

    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise ModelResolutionError(f"{folder} holds no MLmodel file: it is not an MLflow model",
                                   hint="log the model with mlflow.<flavor>.log_model")
    fix = "log the model again with mlflow.<flavor>.log_model (or repair its MLmodel file)"
    try:
        meta = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelLoadError(f"the MLmodel file in {folder} is not UTF-8 text", hint=fix) from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ModelLoadError(f"the MLmodel file in {folder} is not valid YAML{line}: "
                             f"{getattr(exc, 'problem', None) or exc}", hint=fix) from None
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not isinstance(meta.get("flavors", {}), dict):
        raise ModelLoadError(f"the MLmodel file in {folder} is not an MLflow model description "
                             "(expected a mapping with a 'flavors' mapping)", hint=fix)
    return meta


def _signature(meta: dict[str, Any]) -> dict[str, Any] | None:
    sig = meta.get("signature")
    if not sig:
        return None
    out = {}
    for key in ("inputs", "outputs"):
        val = sig.get(key) if isinstance(sig, dict) else None
        try:
            out[key] = json.loads(val) if isinstance(val, str) else val
        except ValueError as exc:
            raise ModelLoadError(f"the model signature's {key} in the MLmodel file is not valid JSON: {exc}",
                                 hint="log the model again with an input_example or signature") from None
    return out


def _download(client: Any, uri: str, dst: Path) -> Path:
    import mlflow.artifacts

    from governance.host.tracking import pinned_store

    dst.mkdir(parents=True, exist_ok=True)
    try:
        with pinned_store(client.tracking_uri):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:
        if _disk_full(exc):
            raise ModelResolutionError(f"no space left to download the model files of {uri} into {dst}",
                                       hint="free some space there, or point TMPDIR at a larger disk") from exc
        raise ModelResolutionError(f"could not download the model files of {uri}: {type(exc).__name__}: {exc}",
                                   hint="check that the artifact store is reachable from this machine") from exc


def _disk_full(exc: BaseException) -> bool:
    import errno

    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def resolve(uri: str, *, tracking_uri: str, download_dir: Path) -> ModelVersionInfo:
    """Resolve ``uri`` into a ModelVersionInfo with the model files downloaded and hashed."""
    ref = parse_model_uri(uri)
    if ref.kind == "file":
        path = Path(ref.path)
        files = {path.name: sha256_file(path)}
        for ext in _external_data_files(path):
            files[ext.name] = sha256_file(ext)
        return ModelVersionInfo(uri=uri, kind="file", name=path.stem, local_path=path.parent,
                                flavors={"onnx": {"data": path.name}}, files=files)
    if ref.kind == "folder":
        folder = Path(ref.path)
        meta = _read_mlmodel(folder)
        return _finish(ModelVersionInfo(uri=uri, kind="file", name=folder.name, local_path=folder), meta, folder)

    from governance.host.tracking import client as make_client

    client = make_client(tracking_uri)
    info = ModelVersionInfo(uri=uri, kind="registry")
    if ref.kind == "run":
        info.kind, info.run_id = "run", ref.run_id
        try:
            client.get_run(ref.run_id)
        except Exception as exc:
            raise ModelResolutionError(f"no run with id {ref.run_id} in this tracking store",
                                       hint="check the run id, or --tracking-uri") from exc
        folder = _download(client, uri, download_dir)
    elif ref.kind == "model_id":
        info.kind, info.model_id = "logged_model", ref.path
        folder = _download(client, uri, download_dir)
    else:
        mv = _lookup_version(client, ref)
        info.name, info.version = mv.name, str(mv.version)
        info.run_id, info.source = mv.run_id, mv.source
        info.model_id = getattr(mv, "model_id", None) or _model_id_from_source(mv.source)
        info.aliases = list(mv.aliases or [])
        info.tags = dict(mv.tags or {})
        info.description = mv.description or None
        info.status = mv.status
        if mv.creation_timestamp:
            info.created_at = datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=timezone.utc).isoformat()
        try:  # aliases may be missing from version records; the model-level description lives here
            rm = client.get_registered_model(mv.name)
            if not info.aliases:
                info.aliases = sorted(a for a, v in (rm.aliases or {}).items() if str(v) == info.version)
            info.registered_model_description = rm.description or None
        except Exception:
            pass
        folder = _download(client, f"models:/{mv.name}/{mv.version}", download_dir / f"{mv.name}-v{mv.version}")
    meta = _read_mlmodel(folder)
    if not info.run_id:
        info.run_id = meta.get("run_id")
    if not info.model_id:
        info.model_id = meta.get("model_id")
    return _finish(info, meta, folder)


def _model_id_from_source(source: str | None) -> str | None:
    if source and source.startswith("models:/m-"):
        return source[len("models:/"):]
    return None


def _finish(info: ModelVersionInfo, meta: dict[str, Any], folder: Path) -> ModelVersionInfo:
    info.local_path = folder
    info.flavors = {k: v for k, v in (meta.get("flavors") or {}).items() if k != "python_function"}
    info.signature = _signature(meta)
    example = (meta.get("saved_input_example_info") or {}).get("artifact_path")
    if example and (folder / example).is_file():
        info.input_example_path = folder / example
    info.files = hash_tree(folder)
    if not info.flavors:
        raise ModelResolutionError(f"{info.uri} has no model flavor governance can load",
                                   hint="supported flavors: onnx, pytorch")
    return info


def _external_data_files(path: Path) -> list[Path]:
    """Files an ONNX model stores its weights in (``save_as_external_data``), so the hash covers them."""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return []
    out = set()
    for init in model.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                candidate = path.parent / entry.value
                if candidate.is_file():
                    out.add(candidate)
    return sorted(out)


def previous_versions(client: Any, name: str, version: str, limit: int) -> list[str]:
    """Up to ``limit`` versions of ``name`` older than ``version``, newest first."""
    older = [int(mv.version) for mv in client.search_model_versions(f"name='{name}'") if int(mv.version) < int(version)]
    return [f"models:/{name}/{v}" for v in sorted(older, reverse=True)[:limit]]
