"""The report's fixed section skeleton and where each section answers four governance frameworks.

Numbers are stable (templates, the crosswalk table and ``report.json`` refer to them), so a validator can
cite "section 6.2" across report versions. The mapping follows the research note ecosystem.md §3.2; it
says where the evidence for a documentation requirement is found, it is not a legal opinion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FRAMEWORKS: dict[str, dict[str, str]] = {
    "annex_iv": {
        "short": "EU AI Act Annex IV",
        "title": "Regulation (EU) 2024/1689 (AI Act), Annex IV: technical documentation referred to in Art. 11(1)",
    },
    "sr_11_7": {
        "short": "SR 11-7",
        "title": "Federal Reserve SR 11-7 / OCC 2011-12, Supervisory Guidance on Model Risk Management (4 April 2011)",
    },
    "nist": {
        "short": "NIST AI RMF",
        "title": "NIST AI 100-1, Artificial Intelligence Risk Management Framework (AI RMF 1.0, January 2023)",
    },
    "iso_42001": {
        "short": "ISO/IEC 42001",
        "title": "ISO/IEC 42001:2023, AI management system (clause 7.5 and Annex A controls)",
    },
}

DISCLAIMER = (
    "The crosswalk shows where this report holds evidence for each framework's documentation requirements. "
    "It is not a legal opinion and not a conformity assessment; the responsible persons decide whether the "
    "evidence is sufficient."
)


@dataclass(frozen=True)
class Section:
    number: str
    id: str
    title: str
    annex_iv: str
    sr_11_7: str
    nist: str
    iso_42001: str
    source: str  # where the content comes from: tool, registry, plugins, human

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SECTIONS: tuple[Section, ...] = (
    Section("1", "document_control", "Document control",
            "2(g) dated and signed test report", "Governance, policies and controls", "GOVERN 1.4",
            "Cl. 7.5 documented information", "tool, configuration, human"),
    Section("2", "identity", "Model identity and lineage",
            "1(a), 1(c), 2(c), 6", "Model inventory", "GOVERN 1.6", "A.6.2.3, A.6.2.7",
            "MLflow registry, file hashing"),
    Section("3", "intended_use", "Intended use",
            "1(a), 3", "Purpose and use", "MAP 1.1", "A.5, A.8", "model card, version tags or description"),
    Section("4", "data", "Data",
            "2(d), 2(g)", "Data (development)", "MEASURE 2.1", "A.7", "run data, model card"),
    Section("5", "performance", "Performance",
            "2(g), 3, 4", "Outcomes analysis", "MEASURE 2.3", "A.6.2.4", "evaluation and training run metrics"),
    Section("6", "explainability", "Explainability evidence",
            "2(b), 2(e), 3; Art. 13", "Conceptual soundness", "MEASURE 2.9", "A.6.2.7", "method plugins"),
    Section("7", "quality", "Explanation quality",
            "2(g)", "Benchmarking, effective challenge", "MEASURE 2.9, MEASURE 2.1", "A.6.2.4",
            "method metrics, policy"),
    Section("8", "comparison", "Cross-version comparison",
            "6, 9", "Ongoing monitoring", "MANAGE 4.1", "A.6.2.6", "registry history, peer methods"),
    Section("9", "limitations", "Limitations and assumptions",
            "3", "Limitations and assumptions", "MAP 2.2", "A.6.2.7", "plugins, run, model card"),
    Section("10", "risk", "Risk and human oversight",
            "2(e), 5", "Governance, policies and controls", "MANAGE 1.3, MAP 2.2", "A.5", "model card, policy"),
    Section("11", "reproducibility", "Reproducibility annex",
            "2(c), 2(g)", "Process verification", "MEASURE 2.1", "A.4.4, A.6.2.8", "tool"),
    Section("12", "integrity", "Integrity annex",
            "2(g)", "Controls", "GOVERN 1.4", "Cl. 7.5.3 integrity, A.6.2.8", "tool"),
    Section("13", "signoff", "Sign-off",
            "2(g) signed by the responsible persons", "Effective challenge", "GOVERN 2.1",
            "Cl. 7.5.2 review and approval", "human"),
)


def section(section_id: str) -> Section:
    """The section with this id (KeyError names the valid ids)."""
    for s in SECTIONS:
        if s.id == section_id:
            return s
    raise KeyError(f"unknown report section '{section_id}'; sections are: {', '.join(s.id for s in SECTIONS)}")
