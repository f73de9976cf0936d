"""Bad input, table-driven (issue 20, deliverable 6): every case runs the real CLI against the session's
SQLite store and asserts the documented exit code, no traceback, a message that names the problem with a
hint, zero new MLflow runs and zero files left behind (in the working folder, TMPDIR, the output folder,
the store's folder and the folder of the bad inputs themselves).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

BC = "models:/bc-mlp/1"


def run(*extra: str, model: str = BC) -> list[str]:
    return ["run", model, "--methods", "occlusion", "--tracking-uri", "{uri}", "--experiment", "bad-inputs", *extra]


def report(*extra: str, model: str = BC) -> list[str]:
    return ["report", model, "--methods", "occlusion", "--tracking-uri", "{uri}", "--experiment", "bad-inputs",
            "-o", "{out}", *extra]


def data(name: str) -> list[str]:
    return run("--data", "{bad}/" + name)


#: (id, argv, exit code, words the message must contain, extra environment)
CASES = [
    # ---------------------------------------------------------------- model references and model files (4)
    ("unknown-model", run(model="models:/nope/1"), 4, ["no registered model named 'nope'"], {}),
    ("unknown-version", run(model="models:/bc-mlp/9"), 4, ["has no version 9"], {}),
    ("no-version", run(model="models:/bc-mlp"), 4, ["names no version or alias"], {}),
    ("version-not-a-number", run(model="models:/bc-mlp/abc"), 4, ["'abc'", "is not a version number"], {}),
    ("unknown-alias", run(model="models:/bc-mlp@staging"), 4, ["has no alias '@staging'"], {}),
    ("run-uri-without-path", run(model="runs:/abc"), 4, ["needs a run id and an artifact path"], {}),
    ("unknown-run", run(model="runs:/0123456789abcdef0123456789abcdef/model"), 4, ["no run with id"], {}),
    ("missing-onnx-file", run(model="/does/not/exist.onnx"), 4, ["ONNX file", "does not exist"], {}),
    ("garbage-onnx-file", run(model="{bad}/garbage.onnx"), 4, ["garbage.onnx is not a valid ONNX model"], {}),
    ("folder-without-mlmodel", run(model="{bad}"), 4, ["cannot interpret"], {}),
    ("broken-mlmodel-yaml", run(model="{bad}/broken-yaml"), 4, ["MLmodel file", "not valid YAML", "line"], {}),
    ("mlmodel-not-a-mapping", run(model="{bad}/mlmodel-list"), 4, ["not an MLflow model description"], {}),
    ("mlmodel-binary", run(model="{bad}/mlmodel-binary"), 4, ["MLmodel file", "not UTF-8"], {}),
    ("mlmodel-no-flavor", run(model="{bad}/mlmodel-no-flavor"), 4, ["no model flavor governance can load"], {}),
    ("mlmodel-bad-signature", run(model="{bad}/mlmodel-bad-signature"), 4, ["signature", "not valid JSON"], {}),
    ("pickle-model-run", run(model="{payload}"), 4, ["pickle-format PyTorch model", "--trust-pickle"], {}),
    ("pickle-model-inspect", ["inspect", "{payload}", "--tracking-uri", "{uri}"], 4,
     ["pickle-format PyTorch model", "runs any code"], {}),
    ("pickle-mlflow-switch-off", ["inspect", "{payload}", "--tracking-uri", "{uri}", "--trust-pickle"], 4,
     ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false"], {"MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}),
    ("pickle-report", report(model="{payload}"), 4, ["pickle-format PyTorch model"], {}),
    # ---------------------------------------------------------------- tracking store (6)
    ("tracking-unknown-scheme", run("--tracking-uri", "foo://bar"), 6, ["scheme foo://", "tracking store"], {}),
    ("tracking-unreachable", run("--tracking-uri", "http://127.0.0.1:9"), 6, ["cannot reach"], {}),
    ("tracking-file-store", run("--tracking-uri", "file:///tmp/mlruns"), 6, ["file store"], {}),
    ("tracking-sqlite-missing-folder", run("--tracking-uri", "sqlite:////does/not/exist/mlflow.db"), 6,
     ["SQLite tracking store", "does not exist"], {}),
    ("tracking-sqlite-read-only", run("--tracking-uri", "sqlite:///{ro}/mlflow.db"), 6, ["read-only folder"], {}),
    ("tracking-unknown-scheme-inspect", ["inspect", BC, "--tracking-uri", "foo://bar"], 6, ["scheme foo://"], {}),
    # ---------------------------------------------------------------- data (5)
    ("data-missing", data("nope.npz"), 5, ["does not exist"], {}),
    ("data-random-bytes-npz", data("random.npz"), 5, ["is not a zip archive", "never unpickles"], {}),
    ("data-random-bytes-npy", data("random.npy"), 5, ["is not an array saved by np.save"], {}),
    ("data-object-array", data("objects.npz"), 5, ["object array", "never unpickles"], {}),
    ("data-strings", data("strings.npz"), 5, ["text (strings)", "not numbers"], {}),
    ("data-complex", data("complex.npz"), 5, ["complex numbers", "imaginary"], {}),
    ("data-1e38", data("huge.npz"), 5, ["1e+38", "overflows float32"], {}),
    ("data-nan", data("nan.npz"), 5, ["NaN/infinite"], {}),
    ("data-inf", data("inf.npz"), 5, ["NaN/infinite"], {}),
    ("data-wrong-shape", data("shape.npz"), 5, ["does not fit bc-mlp v1"], {}),
    ("data-empty", data("empty.npz"), 5, ["is empty"], {}),
    ("data-labels-mismatch", data("mismatch.npz"), 5, ["labels in y"], {}),
    ("data-no-x", data("nox.npz"), 5, ["none named X"], {}),
    ("data-header-only-csv", data("header.csv"), 5, ["has a header", "but no rows"], {}),
    ("data-empty-csv", data("empty.csv"), 5, ["is empty"], {}),
    ("data-non-numeric-csv", data("text.csv"), 5, ["non-numeric column"], {}),
    ("data-non-utf8-csv", data("latin.csv"), 5, ["not UTF-8"], {}),
    ("data-missing-target", run("--data", "{bad}/table.csv", "--target", "nope"), 5,
     ["target column 'nope' is not in"], {}),
    ("data-unsupported-format", data("notes.txt"), 5, ["unsupported data format '.txt'"], {}),
    # ---------------------------------------------------------------- configuration (2)
    ("unknown-method", run("--methods", "occlusoin"), 2, ["unknown method 'occlusoin'"], {}),
    ("no-methods", run("--methods", ","), 2, ["no methods selected"], {}),
    ("unknown-config-key", run("--set", "occlusion.n_sample=3"), 2, ["invalid configuration for method"], {}),
    ("set-without-equals", run("--set", "oops"), 2, ["is not METHOD.KEY=VALUE"], {}),
    ("config-for-unknown-method", run("--set", "nosuch.x=1"), 2, ["configuration given for unknown method"], {}),
    ("n-samples-beyond-memory", run("--set", "occlusion.n_samples=100000000000"), 2,
     ["occlusion.n_samples=100,000,000,000", "of memory"], {}),
    ("memory-limit-not-a-size", run(), 2, ["GOVERNANCE_MEMORY_LIMIT", "is not a size"],
     {"GOVERNANCE_MEMORY_LIMIT": "lots"}),
    ("config-file-bad-yaml", run("--config", "{bad}/broken.yaml"), 2, ["cannot parse"], {}),
    ("config-file-not-methods", run("--config", "{bad}/list.yaml"), 2, ["must map method names"], {}),
    ("settings-unknown-key", run(), 2, ["unknown key(s)", "colour"], {"GOVERNANCE_CONFIG": "{bad}/unknown.toml"}),
    ("settings-bad-toml", run(), 2, ["cannot parse the settings file"], {"GOVERNANCE_CONFIG": "{bad}/broken.toml"}),
    ("settings-missing", run(), 2, ["GOVERNANCE_CONFIG points at"], {"GOVERNANCE_CONFIG": "{bad}/none.toml"}),
    ("trust-pickle-not-boolean", run(model="{payload}"), 2, ["neither true nor false"],
     {"GOVERNANCE_TRUST_PICKLE": "maybe"}),
    # ---------------------------------------------------------------- report inputs (2 / 8)
    ("report-binary-model-card", report("--model-card", "{bad}/card.bin"), 2, ["model card", "is not text"], {}),
    ("report-model-card-bad-yaml", report("--model-card", "{bad}/broken.yaml"), 2, ["not valid YAML"], {}),
    ("report-model-card-unknown-field", report("--model-card", "{bad}/card-typo.yaml"), 2,
     ["unknown field(s): intended_usage"], {}),
    ("report-policy-bad", report("--policy", "{bad}/broken.yaml"), 2, ["policy file", "cannot be parsed"], {}),
    ("report-read-only-output", ["report", BC, "--methods", "occlusion", "--tracking-uri", "{uri}",
                                 "-o", "{ro}/reports"], 8, ["is not writable"], {}),
    ("report-output-is-a-file", ["report", BC, "--methods", "occlusion", "--tracking-uri", "{uri}",
                                 "-o", "{bad}/notes.txt"], 8, ["is a file"], {}),
    ("report-no-model", ["report", "--tracking-uri", "{uri}"], 2, ["give a MODEL_URI or --from-run"], {}),
    ("report-from-run-without-run-json", ["report", "--from-run", "{bad}", "-o", "{out}"], 8, ["has no run.json"], {}),
    ("report-sign-key-missing", report("--sign-key", "{bad}/nokey.pem", "--sign-cert", "{keys}/cert.pem"), 2,
     ["signing key", "does not exist"], {}),
    ("report-sign-key-garbage", report("--sign-key", "{bad}/notes.txt", "--sign-cert", "{keys}/cert.pem"), 2,
     ["cannot read the signing key"], {}),
    ("report-sign-key-wrong-cert", report("--sign-key", "{keys}/key.pem", "--sign-cert", "{keys2}/cert.pem"), 2,
     ["does not belong to the certificate"], {}),
    ("report-sign-cert-alone", report("--sign-cert", "{keys}/cert.pem"), 2, ["--sign-cert was given without"], {}),
    ("report-signed-without-pdf", report("--sign-key", "{keys}/key.pem", "--sign-cert", "{keys}/cert.pem",
                                         "--no-pdf"), 8, ["a signed report needs its PDF"], {}),
    ("report-encrypted-key-no-passphrase", report("--sign-key", "{keys3}/key.pem", "--sign-cert", "{keys3}/cert.pem"),
     2, ["GOVERNANCE_SIGN_PASSPHRASE"], {}),
    # ---------------------------------------------------------------- verify and keygen (2 / 8)
    ("verify-not-a-pdf", ["verify", "{bad}/fake.pdf"], 8, ["PDF readable"], {}),
    ("verify-plain-pdf", ["verify", "{bad}/plain.pdf"], 8, ["missing: report.json, manifest.json"], {}),
    ("verify-trust-not-a-cert", ["verify", "{bad}/plain.pdf", "--trust", "{bad}/notes.txt"], 2,
     ["no readable X.509 certificate"], {}),
    ("verify-trust-empty-folder", ["verify", "{bad}/plain.pdf", "--trust", "{bad}/empty-dir"], 2,
     ["holds no certificate"], {}),
    ("verify-unknown-skip", ["verify", "{bad}/plain.pdf", "--skip", "everything"], 2, ["unknown --skip value"], {}),
    ("keygen-existing", ["keygen", "--out", "{keys}"], 2, ["already exists"], {}),
]


@pytest.fixture(scope="module")
def bad(tmp_path_factory, registry):
    """Every bad input, written once (before any case is snapshotted)."""
    from tests.pickle_payload import register_payload_model

    from governance.report.signing import make_test_identity

    root = tmp_path_factory.mktemp("bad-inputs")
    X = np.load(registry.data["bc"])["X"][:8].astype(np.float32)
    rng = np.random.default_rng(0)
    (root / "random.npz").write_bytes(b"\x00" + rng.bytes(255))
    (root / "random.npy").write_bytes(b"\x00" + rng.bytes(255))
    (root / "garbage.onnx").write_bytes(rng.bytes(512))
    np.savez(root / "objects.npz", X=np.array([{"a": 1}] * 8, dtype=object))
    np.savez(root / "strings.npz", X=np.full(X.shape, "0.5"))
    np.savez(root / "complex.npz", X=X.astype(np.complex64) * (1 + 1j))
    huge = X.copy()
    huge[0, 0] = 1e38
    np.savez(root / "huge.npz", X=huge)
    for name, value in (("nan", np.nan), ("inf", np.inf)):
        bad_x = X.copy()
        bad_x[1, 2] = value
        np.savez(root / f"{name}.npz", X=bad_x)
    np.savez(root / "shape.npz", X=X[:, :7])
    np.savez(root / "empty.npz", X=X[:0])
    np.savez(root / "mismatch.npz", X=X, y=np.zeros(3, dtype=np.int64))
    np.savez(root / "nox.npz", inputs_a=X, inputs_b=X)
    cols = ",".join(f"f{i}" for i in range(X.shape[1]))
    (root / "header.csv").write_text(cols + "\n")
    (root / "empty.csv").write_text("")
    (root / "text.csv").write_text(cols + "\n" + ",".join(["x"] * X.shape[1]) + "\n")
    (root / "latin.csv").write_bytes(("caf\xe9," + cols + "\n").encode("latin-1") + b"1," * X.shape[1] + b"1\n")
    (root / "table.csv").write_text(cols + "\n" + "\n".join(",".join(map(str, row)) for row in X) + "\n")
    (root / "notes.txt").write_text("not a model, not data, not a key\n")
    (root / "broken.yaml").write_text("methods: [unclosed\n  - x: {\n")
    (root / "list.yaml").write_text("- occlusion\n- n_samples\n")
    (root / "card.bin").write_bytes(b"\xff\xfe\x00\x01\x80\x81binary card")
    (root / "card-typo.yaml").write_text("intended_usage: typo of intended_use\n")
    (root / "unknown.toml").write_text('colour = "blue"\n')
    (root / "broken.toml").write_text("tracking_uri = [unclosed\n")
    (root / "fake.pdf").write_bytes(b"%PDF-1.7\n" + rng.bytes(300))
    (root / "empty-dir").mkdir()
    import weasyprint

    weasyprint.HTML(string="<p>a plain PDF</p>").write_pdf(root / "plain.pdf")
    _model_folders(root)
    keys, keys2, keys3 = root / "keys", root / "keys2", root / "keys3"
    make_test_identity(keys, name="Table Signer")
    make_test_identity(keys2, name="Other Signer")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOVERNANCE_SIGN_PASSPHRASE", "secret passphrase")
        make_test_identity(keys3, name="Encrypted Signer")
    payload = register_payload_model(registry.uri, "bad-inputs-payload", root / "PAYLOAD-RAN", root / "payload-src")
    return {"root": root, "payload": payload, "keys": keys, "keys2": keys2, "keys3": keys3}


def _model_folders(root: Path) -> None:
    good_sig = ("signature:\n  inputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float32\", "
                "\"shape\": [-1, 30]}}]'\n")
    for name, text in (("broken-yaml", "flavors:\n  pytorch: {model_data: data\n  onnx: [\n"),
                       ("mlmodel-list", "- flavors\n- pytorch\n"),
                       ("mlmodel-no-flavor", "artifact_path: model\n" + good_sig),
                       ("mlmodel-bad-signature", "flavors:\n  onnx: {data: model.onnx}\nsignature:\n"
                                                 "  inputs: '[{not json'\n")):
        (root / name).mkdir()
        (root / name / "MLmodel").write_text(text)
    (root / "mlmodel-binary").mkdir()
    (root / "mlmodel-binary" / "MLmodel").write_bytes(b"\xff\xfe\x00\x01\x80")


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody can write to, root included (chmod, plus the immutable flag when running as root)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o555)
    immutable = False
    if os.geteuid() == 0:
        immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        if not immutable:
            os.chmod(folder, 0o755)
            pytest.skip("running as root without chattr: cannot make a read-only folder")
    try:
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        os.chmod(folder, 0o755)


def _files(roots: list[Path]) -> set[Path]:
    out: set[Path] = set()
    for root in roots:
        if root.is_dir():
            out |= {p for p in root.rglob("*") if not p.name.endswith(("-journal", "-wal", "-shm"))}
    return out


def _run_count(registry) -> int:
    from mlflow.entities import ViewType

    client = registry.client()
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return len(client.search_runs(ids, run_view_type=ViewType.ALL, max_results=5000))


def _invoke(case, bad, registry, cli_invoke, monkeypatch, tmp_path):
    _, argv, _, _, env = case
    tmpdir, out, ro = tmp_path / "tmpdir", tmp_path / "out-root" / "reports", tmp_path / "ro"
    tmpdir.mkdir()
    values = {"uri": registry.uri, "bad": str(bad["root"]), "out": str(out), "ro": str(ro), "payload": bad["payload"],
              "keys": str(bad["keys"]), "keys2": str(bad["keys2"]), "keys3": str(bad["keys3"])}
    args = [a.format(**values) for a in argv]
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    for var in ("GOVERNANCE_TRUST_PICKLE", "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "GOVERNANCE_SIGN_PASSPHRASE",
                "GOVERNANCE_CONFIG", "GOVERNANCE_MEMORY_LIMIT"):
        monkeypatch.delenv(var, raising=False)
    roots = [Path.cwd(), tmp_path, bad["root"], registry.root]
    with read_only(ro) if "{ro}" in " ".join(argv) else contextlib.nullcontext():
        before_files, before_runs = _files(roots), _run_count(registry)
        with pytest.MonkeyPatch.context() as mp:  # the case's environment lasts for the command only
            for key, value in env.items():
                mp.setenv(key, value.format(**values))
            code, stdout, stderr = cli_invoke(*args)
        after_files, after_runs = _files(roots), _run_count(registry)
    new = sorted(after_files - before_files)
    return code, stdout, stderr, new, after_runs - before_runs


def test_the_table_has_at_least_50_cases():
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, bad, registry, test_plugins, cli_invoke, monkeypatch, tmp_path):
    name, _, expected_code, needles, _ = case
    code, out, err, new, new_runs = _invoke(case, bad, registry, cli_invoke, monkeypatch, tmp_path)
    text = out + err
    assert code == expected_code, (name, out[-2000:], err[-2000:])
    assert "Traceback" not in text, text[-3000:]
    verdict = "NOT VERIFIED" in err  # verify prints each failed check on stdout and the verdict on stderr
    for needle in needles:
        assert needle in (text if verdict else err), (needle, err[-2000:])
    assert "hint:" in err or verdict, err[-1500:]
    assert new_runs == 0, f"{name} left {new_runs} MLflow run(s)"
    assert not new, f"{name} left files behind: {new[:10]}"
    assert not (bad["root"] / "PAYLOAD-RAN").exists(), "the pickle payload ran"
