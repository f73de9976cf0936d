"""RunSpec is the one place a job's options are spelled: the CLI's options are generated from it, the service's
job payload round-trips through it, and its fingerprint hashes files by content."""

from __future__ import annotations

import pytest

from governance.cli.options import spec_fields, spec_from_cli
from governance.contract.errors import ConfigError
from governance.run.spec import RunSpec

#: options of each command that are not job options (they drive the command itself)
EXTRA = {
    "run": {"model_uris", "as_json", "executor"},
    "report": {"model_uri", "as_json", "from_run"},
    "serve": {"host", "port", "url_path", "window_s", "worker", "created", "aliases", "tags", "models",
              "max_attempts", "concurrency", "lease_s", "job_timeout", "retry_delay", "handler", "isolation",
              "poll_s", "queue_url", "log_level"},
}


def _commands():
    from governance.cli.report import report_cmd
    from governance.cli.run import run_cmd
    from governance.cli.service import schedule_cmd, serve_cmd, watch_cmd

    return {"run": run_cmd, "report": report_cmd, "serve": serve_cmd, "watch": watch_cmd, "schedule": schedule_cmd}


@pytest.mark.parametrize("name", ["run", "report", "serve", "watch", "schedule"])
def test_every_job_option_of_a_command_comes_from_runspec(name):
    cmd = _commands()[name]
    scope = name if name in ("run", "report") else "service"
    params = {p.name for p in cmd.params}
    from_spec = {f.name for f, _ in spec_fields(scope)}
    assert from_spec <= params
    spec_names = set(RunSpec.field_names())
    # any other option must be one of the command's own, never a second spelling of a job option
    assert not (params - from_spec) & spec_names
    if name in EXTRA:
        assert params - from_spec == EXTRA[name]


def test_every_runspec_field_reaches_the_command_line_or_is_api_only():
    exposed = {f.name for scope in ("run", "report", "service") for f, _ in spec_fields(scope)}
    assert set(RunSpec.field_names()) - exposed == {"method_config"}  # the API's config= dict


def test_cli_values_build_the_same_spec_as_the_api(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "m.yaml"
    cfg.write_text("methods:\n  neflag:\n    n_samples: 4\n")
    kw = {f.name: None for f, _ in spec_fields("report")}
    kw.update(methods="neflag, spectral", overrides=("neflag.m=3",), template_dirs=(), config_file=str(cfg),
              force=False, reuse=True, pdf=True, log_to_mlflow=False, seed=3, max_samples=9)
    spec = spec_from_cli(kw, "report")
    assert kw == {}  # every job option was consumed
    assert spec == RunSpec(methods=("neflag", "spectral"), overrides=("neflag.m=3",), config_file=str(cfg), seed=3,
                           max_samples=9, log_to_mlflow=False)
    assert spec.method_settings() == {"neflag": {"n_samples": 4, "m": 3}}
    assert spec.device == "auto" and spec.experiment == "governance" and spec.output_dir is None


def test_settings_file_fills_what_the_command_line_left_out(tmp_path, monkeypatch):
    (tmp_path / "governance.toml").write_text('device = "cpu"\n[report]\nout_dir = "reports-here"\n'
                                              'signer = "Ada, Validator, Bank"\n')
    monkeypatch.chdir(tmp_path)
    kw = {f.name: None for f, _ in spec_fields("report")}
    kw.update(template_dirs=(), overrides=(), force=False, reuse=True, pdf=True, log_to_mlflow=True)
    spec = spec_from_cli(kw, "report")
    assert spec.device == "cpu" and spec.output_dir == "reports-here"
    assert spec.signer_record() == {"name": "Ada", "role": "Validator", "organisation": "Bank"}


def test_round_trip_and_legacy_payload_keys(tmp_path):
    spec = RunSpec(methods=("a",), overrides=("a.k=1",), max_peers=0, batch_size=8, render_report=False)
    assert RunSpec.from_dict(spec.to_dict()) == spec
    old = {"methods": ["a"], "config": None, "output_dir": "/x", "report": False, "unknown_future_key": 1}
    again = RunSpec.from_dict(old)
    assert again.output_dir == "/x" and again.render_report is False and again.methods == ("a",)


def test_fingerprint_hashes_contents_not_paths(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("checks: []\n")
    b.write_text("checks: []\n")
    assert RunSpec(policy=str(a)).fingerprint() == RunSpec(policy=str(b)).fingerprint()
    b.write_text("checks: [] # changed\n")
    assert RunSpec(policy=str(a)).fingerprint() != RunSpec(policy=str(b)).fingerprint()
    assert RunSpec(output_dir="/one").fingerprint() == RunSpec(output_dir="/two").fingerprint()
    assert RunSpec(seed=1).fingerprint() != RunSpec(seed=2).fingerprint()


@pytest.mark.parametrize("bad,match", [
    ({"max_samples": 0}, "max_samples must be an integer >= 1"),
    ({"device": "tpu"}, "unknown device 'tpu'"),
    ({"methodz": ["x"]}, "unknown option"),
    ({"config": {"neflag": 3}}, "map method names to settings"),
    ({"seed": "7"}, "seed must be an integer"),
])
def test_bad_options_are_config_errors_naming_the_problem(bad, match):
    with pytest.raises(ConfigError, match=match):
        RunSpec.build(bad)
