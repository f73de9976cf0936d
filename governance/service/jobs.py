"""What a report job carries and how its idempotency key is made.

A job is "report on ``models:/<name>/<version>`` with these settings". Its key is
``sha256(name, version, request, settings fingerprint)``: the same version under the same settings is one
job however many webhooks, polls and schedules ask for it, and changing the policy or config file (their
*contents* are hashed, not their paths) makes the next trigger produce a new report.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from governance.contract.errors import ConfigError
from governance.service.triggers import Trigger

JOB_KIND = "report"


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: str | None, what: str) -> str | None:
    """sha256 of a file's contents, cached on (path, mtime, size): the receiver fingerprints the settings
    on every delivery and a data file may be large."""
    if not path:
        return None
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
        raise ConfigError(f"cannot read the {what} file {p}: {exc.strerror}", hint=f"check the --{what} path") from None


def _dirs_digest(dirs: tuple[str, ...]) -> str | None:
    """One hash over every file in the template folders (relative path + content)."""
    if not dirs:
        return None
    h = hashlib.sha256()
    for d in dirs:
        root = Path(d).expanduser()
        if not root.is_dir():
            raise ConfigError(f"template folder {root} does not exist", hint="check --template-dir")
        h.update(f"dir:{root}\n".encode())
        for f in sorted(p for p in root.rglob("*") if p.is_file()):
            h.update(f"{f.relative_to(root).as_posix()}:{_file_digest(str(f), 'template')}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ReportSettings:
    """The options every report job of one service runs with: those of ``governance run``/``report``."""

    tracking_uri: str | None = None
    methods: tuple[str, ...] = ()  # empty: every installed method
    data: str | None = None
    target: str | None = None
    config: str | None = None  # YAML/TOML/JSON method settings file
    overrides: tuple[str, ...] = ()  # METHOD.KEY=VALUE
    device: str = "auto"
    seed: int = 0
    max_samples: int = 512
    experiment: str = "governance"
    plugins: tuple[str, ...] = ()
    policy: str | None = None
    model_card: str | None = None
    template_dirs: tuple[str, ...] = ()
    signer: str | None = None  # "NAME, ROLE, ORG"
    sign_key: str | None = None  # private key (PEM/DER) or PKCS#12 that signs every report
    sign_cert: str | None = None
    trust_pickle: bool = False  # the service loads pickle-format models only when configured to
    pdf: bool = True
    output_dir: str | None = None
    report: bool = True  # False: explain and log only, no report files

    def __post_init__(self) -> None:
        # absolute paths: the worker may run in another directory than the receiver
        for name in ("data", "config", "policy", "model_card", "output_dir", "sign_key", "sign_cert"):
            value = getattr(self, name)
            if value:
                object.__setattr__(self, name, str(Path(value).expanduser().resolve()))
        object.__setattr__(self, "template_dirs",
                           tuple(str(Path(d).expanduser().resolve()) for d in self.template_dirs or ()))
        for name in ("methods", "overrides", "plugins"):
            object.__setattr__(self, name, tuple(getattr(self, name) or ()))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for name in ("methods", "overrides", "plugins", "template_dirs"):
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ReportSettings":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})

    def fingerprint(self) -> str:
        """Hash of what shapes a report: file *contents* (not paths), methods and options. Where the report
        is written (``output_dir``) is not part of it."""
        doc = {
            "tracking_uri": self.tracking_uri,
            "methods": sorted(self.methods),
            "data": _file_digest(self.data, "data"),
            "target": self.target,
            "config": _file_digest(self.config, "config"),
            "overrides": sorted(self.overrides),
            "device": self.device,
            "seed": self.seed,
            "max_samples": self.max_samples,
            "experiment": self.experiment,
            "plugins": sorted(self.plugins),
            "policy": _file_digest(self.policy, "policy"),
            "model_card": _file_digest(self.model_card, "model-card"),
            "template_dirs": _dirs_digest(self.template_dirs),
            "signer": self.signer,
            "signed": bool(self.sign_key),
            "sign_cert": _file_digest(self.sign_cert, "sign-cert") if self.sign_cert else self.sign_key,
            "trust_pickle": self.trust_pickle,
            "pdf": self.pdf,
            "report": self.report,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def job_key(trigger: Trigger, fingerprint: str) -> str:
    raw = "\x1f".join((JOB_KIND, trigger.name, trigger.version, trigger.request, fingerprint))
    return hashlib.sha256(raw.encode()).hexdigest()


def job_spec(
    trigger: Trigger,
    settings: ReportSettings,
    *,
    source: str,
    max_attempts: int = 5,
    fingerprint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for :meth:`JobQueue.enqueue` (and ``accept_delivery(job=...)``)."""
    fingerprint = fingerprint or settings.fingerprint()
    payload = {
        "model_uri": trigger.model_uri,
        "name": trigger.name,
        "version": trigger.version,
        "trigger": trigger.label,
        "settings": settings.to_dict(),
        "fingerprint": fingerprint,
        **(extra or {}),
    }
    return {
        "kind": JOB_KIND,
        "key": job_key(trigger, fingerprint),
        "payload": payload,
        "source": source,
        "trigger": trigger.label,
        "max_attempts": max_attempts,
    }
