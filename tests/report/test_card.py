"""Human-only fields: model card > version tags > labelled description > unlabelled description; missing
fields are "not provided", with their source recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

from governance.contract.errors import ConfigError
from governance.report.card import FIELD_KEYS, load_model_card, parse_description, resolve_human_fields

MODEL = {
    "tags": {"governance.intended_use": "From the tag.", "governance.risks": "Tag risks",
             "governance.approvers": "Jane Roe (Head of MRM); John Doe, CRO"},
    "description": "A demo classifier.\n\n## Limitations\nOnly adults.\nOnly one site.\n\nOversight: a human reviews each case.",
}


def test_precedence_and_sources():
    fields, _ = resolve_human_fields(MODEL, {"risks": "Card risks"})
    assert (fields["risks"].value, fields["risks"].source) == ("Card risks", "model card")
    assert (fields["intended_use"].value, fields["intended_use"].source) == (
        "From the tag.", "version tag governance.intended_use")
    assert fields["limitations"].value == "Only adults.\nOnly one site."
    assert fields["limitations"].source == "version description"
    assert fields["oversight"].value == "a human reviews each case."
    assert fields["approvers"].value == [{"name": "Jane Roe", "role": "Head of MRM"}, {"name": "John Doe", "role": "CRO"}]


def test_unlabelled_description_only_fills_intended_use():
    fields, _ = resolve_human_fields({"description": "Scores loan applications.", "tags": {}})
    assert fields["intended_use"].value == "Scores loan applications."
    assert fields["intended_use"].source == "version description (unlabelled)"
    assert not fields["limitations"].provided and fields["limitations"].value is None


def test_everything_missing_is_not_provided():
    fields, extra = resolve_human_fields({"tags": {}, "description": None})
    assert set(fields) == set(FIELD_KEYS)
    assert not any(f.provided for f in fields.values())
    assert all(f.to_dict()["source"] is None for f in fields.values())
    assert extra == {}


def test_description_parser_headings_and_label_lines():
    labelled, free = parse_description(
        "Intro line.\n# Intended Use\nTriage.\n### Out of scope\nChildren.\nKnown limitations: small sample\n"
        "## Something else\nkept as free text")
    assert labelled == {"intended_use": "Triage.", "out_of_scope_use": "Children.", "limitations": "small sample"}
    assert "Intro line." in free and "kept as free text" in free


def test_card_file_and_typos(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("intended_use: triage\napprovers:\n  - {name: A, role: B}\nextra:\n  region: EU\n")
    assert load_model_card(card)["approvers"] == [{"name": "A", "role": "B"}]
    fields, extra = resolve_human_fields({"tags": {}}, card)
    assert extra == {"region": "EU"} and fields["approvers"].value == [{"name": "A", "role": "B"}]
    typo = tmp_path / "typo.yaml"
    typo.write_text("intended_usage: triage\n")
    with pytest.raises(ConfigError, match="unknown field.*intended_usage") as err:
        load_model_card(typo)
    assert "intended_use" in err.value.hint
    with pytest.raises(ConfigError, match="does not exist"):
        load_model_card(tmp_path / "missing.yaml")


def test_example_model_card_is_valid():
    example = Path(__file__).resolve().parents[2] / "examples" / "model-card.yaml"
    fields, _ = resolve_human_fields({"tags": {}}, example)
    assert all(fields[k].provided for k in ("intended_use", "limitations", "approvers", "risks", "oversight"))
