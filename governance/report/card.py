"""Human-only report fields: what a person must state about a model (intended use, limitations, approvers).

Each field is looked up, in this order, in a YAML model card, in the model version's tags
(``governance.<field>``), in a labelled part of the version description (a Markdown heading or a
``Label:`` line such as ``## Intended use``), and, for ``intended_use`` only, in the unlabelled version or
registered-model description. The first source that has it wins and is recorded, so the report can say
where every statement came from. A field found nowhere is ``None`` and renders as "not provided".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from governance.contract.errors import ConfigError

TAG_PREFIX = "governance."


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    help: str
    aliases: tuple[str, ...] = ()
    is_list: bool = False


FIELDS: tuple[Field, ...] = (
    Field("owner", "Model owner", "the person or team accountable for the model", ("model owner",)),
    Field("prepared_by", "Prepared by", "author of this report", ("author", "prepared by")),
    Field("reviewer", "Independent reviewer", "the validator who challenged the evidence",
          ("validator", "reviewed by")),
    Field("approvers", "Approvers", "people who sign the report off (name and role)", ("approved by",),
          is_list=True),
    Field("risk_tier", "Risk classification", "e.g. EU AI Act high-risk (Annex III) or an internal tier",
          ("risk classification", "risk tier", "risk class")),
    Field("intended_use", "Intended use", "the purpose the model was built and validated for",
          ("intended purpose", "purpose")),
    Field("out_of_scope_use", "Out-of-scope use", "uses the model must not be put to",
          ("out of scope", "out-of-scope", "out of scope use", "misuse", "prohibited use")),
    Field("users", "Intended users", "who operates the model or reads its outputs",
          ("intended users", "operators")),
    Field("affected_groups", "Affected groups", "people the model's outputs affect",
          ("affected persons", "affected groups", "subjects")),
    Field("training_data", "Training data", "datasets, provenance and preparation",
          ("training dataset",)),
    Field("evaluation_data", "Evaluation data", "the held-out data the performance claims rest on",
          ("evaluation dataset", "test data", "validation data")),
    Field("known_biases", "Known biases and data gaps", "groups or conditions the data under-represents",
          ("bias", "biases", "data gaps")),
    Field("limitations", "Known limitations", "conditions where the model is known to fail",
          ("limitation", "known limitations", "failure modes")),
    Field("assumptions", "Key assumptions", "assumptions the model's validity rests on",
          ("assumption", "key assumptions")),
    Field("risks", "Foreseeable risks", "risks to health, safety or fundamental rights, and mitigations",
          ("risk", "foreseeable risks", "risk assessment")),
    Field("oversight", "Human oversight measures", "how people monitor, override or stop the model",
          ("human oversight", "oversight measures")),
    Field("monitoring", "Post-deployment monitoring", "what is monitored after release and how often",
          ("monitoring plan", "post-market monitoring")),
)
FIELD_KEYS = tuple(f.key for f in FIELDS)
_BY_KEY = {f.key: f for f in FIELDS}


def _norm(label: str) -> str:
    return re.sub(r"[\s_\-]+", " ", label.strip().lower()).strip(" :#*")


_LABELS: dict[str, str] = {}
for _f in FIELDS:
    for _name in (_f.key, _f.label, *_f.aliases):
        _LABELS.setdefault(_norm(_name), _f.key)


@dataclass
class HumanField:
    key: str
    label: str
    value: Any  # str | list[str] | list[dict] | None
    source: str | None  # "model card" | "tag governance.x" | "version description" | ...

    @property
    def provided(self) -> bool:
        return self.value not in (None, "", [], {})

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "value": self.value, "source": self.source, "provided": self.provided}


# --------------------------------------------------------------------------------------------- card
def load_model_card(card: Path | str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Read a YAML model card (or take a dict) and check its keys: a typo must not silently become
    "not provided"."""
    if card is None:
        return {}
    if isinstance(card, Mapping):
        data: Any = dict(card)
        where = "model card"
    else:
        import yaml

        path = Path(card)
        if not path.is_file():
            raise ConfigError(f"model card {path} does not exist", hint="pass --model-card with a YAML file")
        fix = "write the model card as UTF-8 YAML (see examples/model-card.yaml)"
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"model card {path} is not text (it is not valid UTF-8; a binary file?)",
                              hint=fix) from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"model card {path} is not valid YAML: {exc}", hint=fix) from None
        where = f"model card {path}"
        data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of field: value, got {type(data).__name__}")
    allowed = set(FIELD_KEYS) | {"extra"}
    unknown = sorted(set(map(str, data)) - allowed)
    if unknown:
        raise ConfigError(
            f"{where} has unknown field(s): {', '.join(unknown)}",
            hint=f"valid fields are: {', '.join(FIELD_KEYS)}; put anything else under 'extra:'",
        )
    if "extra" in data and not isinstance(data["extra"], dict):
        raise ConfigError(f"{where}: 'extra' must be a mapping of label: text")
    return data


# --------------------------------------------------------------------------------------------- description
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(?P<label>.+?)\s*#*\s*$")
_LABEL_LINE = re.compile(r"^\s*(?:\*\*)?(?P<label>[A-Za-z][A-Za-z \-_]{1,40}?)(?:\*\*)?\s*:\s*(?P<rest>.*)$")


def parse_description(text: str | None) -> tuple[dict[str, str], str]:
    """Split a description into labelled parts (``## Intended use`` headings or ``Limitations: ...``
    lines naming a known field) and the unlabelled remainder."""
    if not text:
        return {}, ""
    parts: dict[str, list[str]] = {}
    free: list[str] = []
    current: list[str] = free
    for line in text.splitlines():
        m = _HEADING.match(line)
        if m:
            key = _LABELS.get(_norm(m["label"]))
            current = parts.setdefault(key, []) if key else free
            if not key:
                free.append(line)
            continue
        m = _LABEL_LINE.match(line)
        if m and (key := _LABELS.get(_norm(m["label"]))):
            current = parts.setdefault(key, [])
            if m["rest"].strip():
                current.append(m["rest"])
            continue
        current.append(line)
    labelled = {k: "\n".join(v).strip() for k, v in parts.items() if "\n".join(v).strip()}
    return labelled, "\n".join(free).strip()


# --------------------------------------------------------------------------------------------- values
def _approvers(value: Any) -> list[dict[str, str]]:
    """Approvers as [{name, role}] from a list of dicts/strings or "Name (Role); Name (Role)"."""
    items: list[Any]
    if isinstance(value, str):
        items = [p for p in re.split(r"[;\n]+", value) if p.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    out: list[dict[str, str]] = []
    for item in items:
        if isinstance(item, Mapping):
            out.append({"name": str(item.get("name") or "not provided"),
                        "role": str(item.get("role") or "not provided")})
            continue
        text = str(item).strip().lstrip("-* ").strip()
        m = re.match(r"^(?P<name>[^(,]+?)\s*(?:\((?P<role>[^)]*)\)|,\s*(?P<role2>.+))?$", text)
        if m:
            out.append({"name": m["name"].strip(), "role": (m["role"] or m["role2"] or "not provided").strip()})
    return out


def _clean(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "approvers":
        return _approvers(value) or None
    if isinstance(value, (list, tuple)):
        items = [str(v).strip() for v in value if str(v).strip()]
        return items or None
    text = str(value).strip()
    return text or None


def resolve_human_fields(model: Mapping[str, Any], card: Path | str | Mapping[str, Any] | None = None
                         ) -> tuple[dict[str, HumanField], dict[str, str]]:
    """Every human field with its value and source, plus the card's ``extra`` entries."""
    card_data = load_model_card(card)
    tags = {str(k): v for k, v in (model.get("tags") or {}).items()}
    labelled, free = parse_description(model.get("description"))
    reg_labelled, reg_free = parse_description(model.get("registered_model_description"))
    fields: dict[str, HumanField] = {}
    for f in FIELDS:
        candidates = [
            (card_data.get(f.key), "model card"),
            (tags.get(TAG_PREFIX + f.key), f"version tag {TAG_PREFIX}{f.key}"),
            (labelled.get(f.key), "version description"),
            (reg_labelled.get(f.key), "registered model description"),
        ]
        if f.key == "intended_use":
            candidates += [(free, "version description (unlabelled)"),
                           (reg_free, "registered model description (unlabelled)")]
        value, source = None, None
        for raw, where in candidates:
            cleaned = _clean(f.key, raw)
            if cleaned is not None:
                value, source = cleaned, where
                break
        fields[f.key] = HumanField(f.key, f.label, value, source)
    extra = {str(k): str(v) for k, v in (card_data.get("extra") or {}).items()}
    return fields, extra
