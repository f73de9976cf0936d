"""Docs honesty: docs/hooks.md documents every hook with its exact signature, firstresult behaviour and the
API version that added it; every hook has a test named after it; docs/plugin-authors.md names only checks,
fixtures and options that exist."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

from governance.contract import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS_MD = (ROOT / "docs" / "hooks.md").read_text()
AUTHORS_MD = (ROOT / "docs" / "plugin-authors.md").read_text()


def _hookspecs() -> dict[str, object]:
    return {name: fn for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if getattr(fn, hookspecs.PROJECT_NAME + "_spec", None) is not None}


HOOKS = _hookspecs()


def signature(fn) -> str:
    """The ``def`` line as written in hookspecs.py, on one line, without the quotes of string annotations."""
    src = inspect.getsource(fn)
    start = src.index("def ") + 4
    header = src[start:src.index(":\n", src.index(")", start))]
    return re.sub(r"\s+", " ", header).replace('"', "").replace("( ", "(").replace(" )", ")")


def section(name: str) -> str:
    """The docs text from this hook's ``###`` heading to the next heading."""
    match = re.search(rf"^### `{re.escape(name)}\(.*?(?=^##)", HOOKS_MD + "\n## end", re.S | re.M)
    assert match, f"docs/hooks.md has no '### `{name}(...)`' heading"
    return match.group(0)


def test_hookspecs_exist():
    assert {"register_methods", "load_model", "run_finished"} <= set(HOOKS)


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_has_a_heading_with_its_exact_signature(name):
    heading = section(name).splitlines()[0]
    assert heading == f"### `{signature(HOOKS[name])}`"


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_documents_firstresult_and_version(name):
    text = section(name)
    opts = getattr(HOOKS[name], hookspecs.PROJECT_NAME + "_spec")
    said = re.search(r"\*firstresult\*: (\*\*yes\*\*|no)", text)
    assert said, f"{name}: no '*firstresult*: yes/no' line"
    assert (said.group(1) == "**yes**") == bool(opts["firstresult"])
    added = re.search(r"versionadded:: (\d+\.\d+)", HOOKS[name].__doc__ or "")
    assert added, f"{name}: the hookspec docstring has no versionadded"
    assert f"*Added in hook API {added.group(1)}.*" in text
    for arg in inspect.signature(HOOKS[name]).parameters:
        assert f"| `{arg}` |" in text, f"{name}: argument {arg} is not in its table"


def test_no_documented_hook_is_stale():
    documented = set(re.findall(r"^### `(\w+)\(", HOOKS_MD, re.M))
    assert documented == set(HOOKS)


def test_the_api_version_and_entry_point_group_are_current():
    major, minor = hookspecs.HOOK_API_VERSION
    assert f"Current hook API version: **{major}.{minor}**" in HOOKS_MD
    assert f"`governance.HOOK_API_VERSION == ({major}, {minor})`" in HOOKS_MD
    assert f'[project.entry-points."{hookspecs.ENTRY_POINT_GROUP}"]' in HOOKS_MD


@pytest.mark.parametrize("name", sorted(HOOKS))
def test_every_hook_has_a_test_named_after_it(name):
    pattern = re.compile(rf"^\s*def test_{name}\w*\(", re.M)
    where = [p.name for p in (ROOT / "tests").rglob("test_*.py") if pattern.search(p.read_text())]
    assert where, f"no test named test_{name}... in tests/"


# ------------------------------------------------------------------------------------------ plugin-authors.md
def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("doc", ["hooks.md", "plugin-authors.md", "executors.md"])
def test_python_examples_parse(doc):
    blocks = _python_blocks((ROOT / "docs" / doc).read_text())
    assert blocks
    for block in blocks:
        ast.parse(block)


def test_every_conformance_check_is_documented_and_only_those():
    from governance.testing.conformance import iter_checks

    table = set(re.findall(r"^\| `(\w+)` \|", AUTHORS_MD, re.M))
    fixtures = {"governance_models", "governance_context", "governance_forward_only"}
    assert table - fixtures == set(iter_checks())


def test_documented_fixtures_exist():
    import governance.testing.pytest_plugin as plugin

    for name in ("governance_models", "governance_context", "governance_forward_only"):
        assert f"`{name}`" in AUTHORS_MD
        assert hasattr(plugin, name), name


def test_documented_conformance_options_exist():
    from governance.testing import MethodConformance

    for attr in ("plugin", "method", "config", "models", "runtimes", "n_samples", "seed"):
        assert re.search(rf"\b{attr} = ", AUTHORS_MD), attr
        assert hasattr(MethodConformance, attr), attr


@pytest.mark.parametrize("doc", ["plugin-authors.md", "executors.md"])
def test_documented_cli_options_exist(doc):
    from governance.cli.run import run_cmd

    options = {opt for p in run_cmd.params for opt in getattr(p, "opts", [])}
    commands = re.findall(r"governance run [^\n`]*", (ROOT / "docs" / doc).read_text())
    assert commands
    for command in commands:
        for flag in re.findall(r"(--[a-z-]+)", command):
            assert flag in options, flag


def test_documented_executor_options_exist():
    import inspect as _inspect

    from governance.api import explain, explain_many
    from governance.run.executors import EXECUTORS, RayExecutor
    from governance.run.spec import RunSpec

    text = (ROOT / "docs" / "executors.md").read_text()
    assert set(re.findall(r"^\| `(\w+)`", text, re.M)) == set(EXECUTORS)
    params = set(RunSpec.field_names()) | {"config"}  # explain/explain_many take RunSpec fields as keywords
    for fn in (RayExecutor, explain_many, explain):
        params |= set(_inspect.signature(fn).parameters)
    for used in re.findall(r"(\w+)=", "\n".join(_python_blocks(text))):
        assert used in params, used
