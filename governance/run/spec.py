"""``RunSpec``: every option of one governance job, in one place.

The CLI (``governance run``/``report``/``serve``/``watch``/``schedule``), the Python API, the webhook service and
the MLflow evaluator all build a RunSpec and hand it on; nothing else spells the options out. Each field carries
its command-line form (:class:`CliOption`), so the click options are generated from this class
(:func:`governance.cli.options.spec_options`) and a new option is added here and nowhere else.

What is hashed where:

* the pipeline's ``config_hash`` (reuse of a finished identical run) covers what determines the explanations:
  the model's content hash, the data's hash, each method's name, version and parsed settings, seed, sample cap,
  device and peers (see :func:`governance.run.pipeline.outcome_config`);
* :meth:`RunSpec.fingerprint` (one service job per version and settings) covers every option that shapes a job's
  outcome, files by their *content*, not their path; where the report is written is not part of it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from governance.contract.errors import ConfigError

#: commands whose options come from RunSpec; "service" stands for serve, watch and schedule; "promote" takes the
#: report's options (it reports, then moves an alias)
COMMANDS = ("run", "report", "promote", "service")
_RUN, _REPORT, _SERVICE = frozenset({"run"}), frozenset({"report", "promote"}), frozenset({"service"})
_ALL = _RUN | _REPORT | _SERVICE
_EXPLAIN = _RUN | _REPORT


@dataclass(frozen=True)
class CliOption:
    """How a RunSpec field appears on the command line.

    ``kind``: ``value`` (one value), ``csv`` (``a,b`` -> tuple), ``multiple`` (repeatable -> tuple), ``flag``
    (a boolean; ``flags`` may be ``--x/--no-x``). ``settings`` names the settings-file key used when the option
    is not given (see :mod:`governance.host.settings`). ``click`` holds extra keyword arguments for click.
    """

    flags: tuple[str, ...]
    help: str
    commands: frozenset[str] = _ALL
    kind: str = "value"
    settings: str | None = None
    envvar: str | None = None
    metavar: str | None = None
    click: Mapping[str, Any] = field(default_factory=dict)


def _opt(default: Any, cli: CliOption | None = None, *, factory: Any = None) -> Any:
    meta = {"cli": cli} if cli else {}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSpec:
    """Every option of one job: what to explain and how, where it is logged, and the report made of it.

    ``method_config`` maps method names to settings (the API's ``config=``); ``config_file`` and ``overrides``
    (``METHOD.KEY=VALUE``) are merged over it, in that order (:meth:`method_settings`). Treat instances as
    read-only (``dataclasses.replace`` makes a changed copy).
    """

    # --- what is explained, and how -----------------------------------------------------------------------
    methods: tuple[str, ...] | None = _opt(None, CliOption(
        ("--methods", "-m"), "Methods to run (default: every installed method).", kind="csv", metavar="A,B"))
    data: str | None = _opt(None, CliOption(
        ("--data", "-d"), "Samples to explain: .npz (X[, y]), .npy, .csv or .parquet. Default: the source run's "
        "governance/eval.npz artifact, else the model's input example.", metavar="FILE"))
    target: str | None = _opt(None, CliOption(("--target",), "Label column of a csv/parquet --data file.",
                                              metavar="COLUMN"))
    peers: tuple[str, ...] | None = _opt(None, CliOption(
        ("--peers",), "Models to compare with (default: the previous versions).", _EXPLAIN, "csv",
        metavar="URI,URI"))
    max_peers: int = _opt(2, CliOption(("--max-peers",), "How many previous versions are compared when --peers "
                                       "is not given.", _EXPLAIN, click={"type": "int>=0"}))
    method_config: Mapping[str, Mapping[str, Any]] = _opt(None, factory=dict)
    config_file: str | None = _opt(None, CliOption(
        ("--config",), "YAML/TOML/JSON file with per-method settings: {methods: {neflag: {n_samples: 8}}}.",
        metavar="FILE"))
    overrides: tuple[str, ...] = _opt((), CliOption(
        ("--set",), "Override one method setting (repeatable), e.g. --set neflag.n_samples=8.", kind="multiple",
        metavar="METHOD.KEY=VALUE"))
    device: str = _opt("auto", CliOption(("--device",), "auto, cpu or cuda (cuda fails loudly when no GPU is "
                                         "really used).", settings="device", click={"type": "device"}))
    seed: int = _opt(0, CliOption(("--seed",), "Seed of every random draw (default 0).", click={"type": "int"}))
    max_samples: int = _opt(512, CliOption(("--max-samples",), "Cap on the samples handed to the methods "
                                           "(default 512).", click={"type": "int>=1"}))
    batch_size: int | None = _opt(None, CliOption(("--batch-size",), "Rows per forward pass (default: the "
                                                  "runtime's).", click={"type": "int>=1"}))
    output: str | None = _opt(None, CliOption(
        ("--output",), "The model output to explain (default: chosen by name, type and shape, e.g. the "
        "probabilities of a converted classifier rather than its label; see `governance inspect`).",
        metavar="NAME"))
    task: str | None = _opt(None, CliOption(
        ("--task",), "classification or regression (default: detected; one float output is a regressor, so a "
        "model with a single binary logit needs --task classification).", click={"type": "task"}))
    # --- where it is logged --------------------------------------------------------------------------------
    tracking_uri: str | None = _opt(None, CliOption(
        ("--tracking-uri",), "MLflow tracking URI [env MLFLOW_TRACKING_URI; default sqlite:///mlflow.db].",
        envvar="MLFLOW_TRACKING_URI", metavar="URI"))
    experiment: str = _opt("governance", CliOption(("--experiment",), "MLflow experiment for the runs "
                                                   "(default governance).", settings="experiment"))
    plugins: tuple[str, ...] | None = _opt(None, CliOption(
        ("--plugins",), "Load only these plugins [env GOVERNANCE_PLUGINS].", kind="csv",
        envvar="GOVERNANCE_PLUGINS", metavar="A,B"))
    force: bool = _opt(False, CliOption(("--force",), "Run again even if an identical finished run exists.",
                                        _EXPLAIN, "flag"))
    reuse: bool = _opt(True, CliOption(("--reuse/--no-reuse",), "Reuse the explanations of an identical "
                                       "finished run (default: reuse).", _REPORT, "flag"))
    # --- the report ----------------------------------------------------------------------------------------
    render_report: bool = _opt(True, CliOption(("--render-report/--explain-only",), "Render a report for each "
                                               "job, or only log the explanations.", _SERVICE, "flag"))
    policy: str | None = _opt(None, CliOption(
        ("--policy",), "YAML/TOML thresholds per metric; gives the verdict, the exit code and governance.status "
        "[settings: report.policy].", _REPORT | _SERVICE, settings="report.policy", metavar="FILE"))
    model_card: str | None = _opt(None, CliOption(
        ("--model-card",), "YAML with the human-only fields (intended use, limitations, approvers ...).",
        _REPORT | _SERVICE, metavar="FILE"))
    output_dir: str | None = _opt(None, CliOption(
        ("--out", "-o", "--output-dir"), "Reports go to DIR/<name>-v<version>/ [settings: report.out_dir; "
        "default governance-reports, for the service $GOVERNANCE_HOME/reports].", _REPORT | _SERVICE,
        settings="report.out_dir", metavar="DIR"))
    template_dirs: tuple[str, ...] = _opt((), CliOption(
        ("--template-dir",), "Folder whose templates override the shipped ones (repeatable, first wins) "
        "[settings: report.template_dirs].", _REPORT | _SERVICE, "multiple", settings="report.template_dirs",
        metavar="DIR"))
    signer: str | None = _opt(None, CliOption(
        ("--signer",), "The responsible person who will sign the report: 'NAME, ROLE, ORG' "
        "[settings: report.signer].", _REPORT | _SERVICE, settings="report.signer", metavar="'NAME, ROLE, ORG'"))
    sign_key: str | None = _opt(None, CliOption(
        ("--sign-key",), "Private key (PEM/DER) or PKCS#12 file that signs the PDF (PAdES) and the manifest "
        "[settings: report.sign_key; passphrase from GOVERNANCE_SIGN_PASSPHRASE only].", _REPORT | _SERVICE,
        settings="report.sign_key", metavar="KEY"))
    sign_cert: str | None = _opt(None, CliOption(
        ("--sign-cert",), "The signing key's certificate, PEM/DER, its chain after it [settings: report.sign_cert]. "
        "Make a test pair with `governance keygen`.", _REPORT | _SERVICE, settings="report.sign_cert",
        metavar="CERT"))
    trust_pickle: bool = _opt(False, CliOption(
        ("--trust-pickle",), "Allow pickle-format models: loading one runs any code its author put into it. Only "
        "when you trust everyone who can register models (see README, 'Pickle-format models'). The service loads "
        "pickle only with this option, whatever its environment says.", _ALL, "flag"))
    pdf: bool = _opt(True, CliOption(("--pdf/--no-pdf",), "Render the PDF (--no-pdf: report.json, report.html "
                                     "and manifest.json only).", _REPORT | _SERVICE, "flag"))
    log_to_mlflow: bool = _opt(True, CliOption(("--log/--no-log",), "Log the report to MLflow and tag the model "
                                               "version (default: log).", frozenset({"report"}), "flag"))
    # --- who hears about it ----------------------------------------------------------------------------------
    notify: str | None = _opt(None, CliOption(
        ("--notify",), "POST a small signed JSON to URL for every verdict and gate action (HMAC-SHA256 as MLflow's "
        "webhooks, secret in GOVERNANCE_NOTIFY_SECRET; docs/gate.md).", _REPORT | _SERVICE, metavar="URL"))

    # ------------------------------------------------------------------------------------------- building
    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:  # os.PathLike in, str kept (JSON payloads, hashing)
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                object.__setattr__(self, name, str(value))
        for name in ("methods", "peers", "plugins"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _as_tuple(value, name))
        for name in ("overrides", "template_dirs"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name) or (), name))
        if not isinstance(self.method_config, Mapping) or not all(
                isinstance(v, Mapping) for v in self.method_config.values()):
            raise ConfigError("method settings must map method names to settings",
                              hint="e.g. config={'neflag': {'n_samples': 8}}")
        object.__setattr__(self, "method_config", {str(k): dict(v) for k, v in self.method_config.items()})
        if self.task == "auto":
            object.__setattr__(self, "task", None)
        if self.task not in (None, "classification", "regression"):
            raise ConfigError(f"unknown task {self.task!r}", hint="use classification or regression (or leave it out)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"unknown device {self.device!r}", hint="use auto, cpu or cuda")
        for name, low in (("max_samples", 1), ("seed", None), ("max_peers", 0), ("batch_size", 1)):
            value = getattr(self, name)
            if value is None and name == "batch_size":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
                raise ConfigError(f"{name} must be an integer" + (f" >= {low}" if low is not None else "")
                                  + f", not {value!r}", hint=f"e.g. {name}={max(low or 0, 1)}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, options: Mapping[str, Any] | None = None, **more: Any) -> "RunSpec":
        """A RunSpec from keyword options, with a clear error for unknown ones. ``config`` is accepted as the
        API's name of ``method_config``."""
        raw = {**(options or {}), **more}
        if "config" in raw:
            raw["method_config"] = raw.pop("config") or {}
        unknown = sorted(set(raw) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}",
                              hint=f"valid options: {', '.join(cls.field_names())}")
        return cls(**{k: v for k, v in raw.items() if not (k == "method_config" and v is None)})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        """The inverse of :meth:`to_dict`; keys from older queue payloads are translated."""
        legacy = {"config": "config_file", "report": "render_report"}
        raw = {legacy.get(k, k): v for k, v in d.items()}
        known = set(cls.field_names())
        return cls(**{k: v for k, v in raw.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["method_config"] = {k: dict(v) for k, v in self.method_config.items()}
        return out

    def replace(self, **changes: Any) -> "RunSpec":
        return dataclasses.replace(self, **changes)

    def with_absolute_paths(self) -> "RunSpec":
        """A copy whose file and folder options are absolute (a worker may run in another directory)."""
        def absolute(p: str | None) -> str | None:
            return str(Path(p).expanduser().resolve()) if p else p

        return self.replace(**{name: absolute(getattr(self, name)) for name in _PATH_FIELDS},
                            template_dirs=tuple(absolute(d) for d in self.template_dirs))

    # ------------------------------------------------------------------------------------------- reading
    def method_settings(self) -> dict[str, dict[str, Any]]:
        """Per-method settings: ``method_config``, then the ``config_file``'s table, then ``--set`` overrides."""
        merged = {k: dict(v) for k, v in self.method_config.items()}
        for method, values in read_method_settings_file(self.config_file).items():
            merged.setdefault(method, {}).update(values)
        for method, values in parse_overrides(self.overrides).items():
            merged.setdefault(method, {}).update(values)
        return merged

    def signer_record(self) -> dict[str, str] | None:
        """``signer`` ("NAME, ROLE, ORG") as the report builder takes it."""
        return parse_signer(self.signer)

    def fingerprint(self) -> str:
        """Hash of every option that shapes a job's outcome: files by content, never by path. ``output_dir``,
        ``log_to_mlflow`` and ``notify`` (where the report and the news about it go) are left out."""
        doc = {name: getattr(self, name) for name in self.field_names() if name not in _NOT_FINGERPRINTED}
        for name in ("methods", "plugins"):
            doc[name] = sorted(doc[name] or ())
        doc["overrides"] = sorted(self.overrides)
        for name in _HASHED_FILES:
            doc[name] = file_digest(getattr(self, name), name.replace("_", "-"))
        doc["method_config"] = self.method_config
        doc["template_dirs"] = dirs_digest(self.template_dirs)
        import hashlib
        import json

        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


_PATH_FIELDS = ("data", "config_file", "policy", "model_card", "output_dir", "sign_key", "sign_cert")
#: files fingerprinted by content (the signing key only by its path: a hash of a private key is not kept)
_HASHED_FILES = ("data", "config_file", "policy", "model_card", "sign_cert")
_NOT_FINGERPRINTED = {"output_dir", "log_to_mlflow", "notify"}


def _as_tuple(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip()) if name in ("methods", "peers", "plugins") \
            else (value,)
    try:
        return tuple(str(v) for v in value)
    except TypeError:
        raise ConfigError(f"{name} must be a list of strings, not {type(value).__name__}") from None


def split_csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def parse_signer(text: str | None) -> dict[str, str] | None:
    """``"NAME, ROLE, ORG"`` -> ``{"name": ..., "role": ..., "organisation": ...}``."""
    if not text:
        return None
    parts = [p.strip() for p in text.split(",")]
    return {k: v for k, v in zip(("name", "role", "organisation"), parts) if v}


# ------------------------------------------------------------------------------------------- method settings
def _parse_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except Exception:
        return text


def read_method_settings_file(config_file: str | None) -> dict[str, dict[str, Any]]:
    """The ``methods`` table of a YAML/TOML/JSON settings file (or the whole file when it has no such key)."""
    if not config_file:
        return {}
    path = Path(config_file)
    try:
        if path.suffix == ".toml":
            import tomllib

            doc = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            import json

            doc = json.loads(path.read_text())
        else:
            import yaml

            doc = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", hint="check the --config path") from None
    except Exception as exc:
        raise ConfigError(f"cannot parse {path}: {exc}", hint="check the YAML/TOML syntax") from exc
    methods = doc.get("methods", doc) if isinstance(doc, dict) else None
    if not isinstance(methods, dict) or not all(isinstance(v, dict) for v in methods.values()):
        raise ConfigError(f"{path} must map method names to settings",
                          hint="e.g.  methods:\n    neflag:\n      n_samples: 8")
    return {str(k): dict(v) for k, v in methods.items()}


def parse_overrides(overrides: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("neflag.n_samples=8", ...)`` -> ``{"neflag": {"n_samples": 8}}`` (values parsed as YAML scalars)."""
    cfg: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not method or not name:
            raise ConfigError(f"--set {item!r} is not METHOD.KEY=VALUE", hint="e.g. --set neflag.n_samples=8")
        cfg.setdefault(method, {})[name] = _parse_value(value)
    return cfg


# ------------------------------------------------------------------------------------------- file digests
_DIGESTS: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | None, what: str) -> str | None:
    """sha256 of a file's contents, cached on (path, mtime, size): the receiver fingerprints the settings
    on every delivery and a data file may be large."""
    if not path:
        return None
    import hashlib

    p = Path(path).expanduser()
    try:
        st = p.stat()
        key = (str(p), st.st_mtime_ns, st.st_size)
        if key not in _DIGESTS:
            h = hashlib.sha256()
            with p.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            if len(_DIGESTS) > 256:
                _DIGESTS.clear()
            _DIGESTS[key] = h.hexdigest()
        return _DIGESTS[key]
    except OSError as exc:
        flag = {"config-file": "config", "model-card": "model-card"}.get(what, what)
        raise ConfigError(f"cannot read the {what} file {p}: {exc.strerror}", hint=f"check the --{flag} path") from None


def dirs_digest(dirs: tuple[str, ...]) -> str | None:
    """One hash over every file in the template folders (relative path + content)."""
    if not dirs:
        return None
    import hashlib

    h = hashlib.sha256()
    for d in dirs:
        root = Path(d).expanduser()
        if not root.is_dir():
            raise ConfigError(f"template folder {root} does not exist", hint="check --template-dir")
        h.update(f"dir:{root}\n".encode())
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(root).as_posix()}:{file_digest(str(f), 'template')}\n".encode())
    return h.hexdigest()
