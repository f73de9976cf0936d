"""Signed reports as an attacker and a verifier meet them: a PAdES signature over every byte, a detached
signature over the manifest, verify that fails closed, and report IDs that never collide.

One signed report is built for the module (a real trained model's run, a real key made by
``governance keygen``); every tampering test works on a copy of it.
"""

from __future__ import annotations

import json
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from tests.report.conftest import make_host
from governance.contract.errors import ConfigError
from governance.report import build_report, verify_report
from governance.report.verify import INTEGRITY_ONLY


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """A signer's key pair (made with the CLI) and a forger's."""
    from governance.cli import main

    root = tmp_path_factory.mktemp("keys")
    for who, name in (("signer", "A. Validator"), ("forger", "A. Validator")):
        try:
            main(["keygen", "--out", str(root / who), "--name", name, "--organisation", "Acme Health"])
        except SystemExit as exc:  # pragma: no cover - keygen exits 0 without raising
            assert not exc.code
    return root


@pytest.fixture(scope="module")
def signer(keys):
    from governance.report.signing import load_identity

    return load_identity(keys / "signer" / "key.pem", keys / "signer" / "cert.pem")


@pytest.fixture(scope="module")
def signed(finished_run, signer, tmp_path_factory):
    out = tmp_path_factory.mktemp("signed") / "report"
    result = build_report(finished_run, out_dir=out, signing=signer, plugin_host=make_host(None, sections_hook=False))
    return result


@pytest.fixture
def bundle(signed, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(signed.out_dir, dst)
    return dst


def _problems(res):
    return {c.name: c.detail for c in res.checks if c.status in ("fail", "unavailable")}


# --------------------------------------------------------------------------------------------- keygen and keys
def test_keygen_writes_a_private_key_and_a_self_signed_certificate(keys, signer):
    key = keys / "signer" / "key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes() and b"ENCRYPTED" not in key.read_bytes()
    assert signer.name == "A. Validator" and signer.describe()["organisation"] == "Acme Health"
    assert signer.describe()["self_signed"] is True
    if shutil.which("openssl"):  # the fingerprint the report prints is the one openssl prints
        out = subprocess.run(["openssl", "x509", "-in", str(keys / "signer" / "cert.pem"), "-noout", "-fingerprint",
                              "-sha256"], capture_output=True, text=True, check=True).stdout
        assert out.split("=", 1)[1].strip().replace(":", "").lower() == signer.fingerprint


def test_bad_keys_are_refused_with_the_fix(keys, tmp_path, monkeypatch):
    from governance.report.signing import load_identity, make_test_identity

    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        load_identity(keys / "signer" / "key.pem", keys / "forger" / "cert.pem")
    with pytest.raises(ConfigError, match="a certificate is needed"):
        load_identity(keys / "signer" / "key.pem")
    with pytest.raises(ConfigError, match="no readable X.509 certificate"):
        load_identity(keys / "signer" / "key.pem", keys / "signer" / "key.pem")
    monkeypatch.setenv("GOVERNANCE_SIGN_PASSPHRASE", "correct horse")
    enc_key, enc_cert = make_test_identity(tmp_path / "enc", name="E. Ncrypted")
    assert b"ENCRYPTED" in enc_key.read_bytes()
    assert load_identity(enc_key, enc_cert).name == "E. Ncrypted"
    monkeypatch.setenv("GOVERNANCE_SIGN_PASSPHRASE", "wrong")
    with pytest.raises(ConfigError, match="GOVERNANCE_SIGN_PASSPHRASE"):
        load_identity(enc_key, enc_cert)
    monkeypatch.delenv("GOVERNANCE_SIGN_PASSPHRASE")
    with pytest.raises(ConfigError, match="GOVERNANCE_SIGN_PASSPHRASE"):
        load_identity(enc_key, enc_cert)


def test_pkcs12_identity_signs_and_verifies(finished_run, keys, signer, tmp_path, monkeypatch):
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    from governance.report.signing import load_identity

    p12 = tmp_path / "signer.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(b"signer", signer.key, signer.cert, None,
                                                          BestAvailableEncryption(b"p12 pass")))
    monkeypatch.setenv("GOVERNANCE_SIGN_PASSPHRASE", "p12 pass")
    ident = load_identity(p12)
    assert ident.fingerprint == signer.fingerprint
    res = build_report(finished_run, out_dir=tmp_path / "r", signing=ident, plugin_host=make_host(None, sections_hook=False))
    check = verify_report(res.pdf_path, trust=[keys / "signer" / "cert.pem"])
    assert check.ok and check.trusted, _problems(check)


# --------------------------------------------------------------------------------------------- the signed report
def test_signed_report_verifies_against_the_trusted_certificate_and_names_its_signer(signed, signer, keys):
    res = verify_report(signed.pdf_path, trust=[keys / "signer" / "cert.pem"])
    assert res.ok and res.trusted and not res.integrity_only, _problems(res)
    assert [s["certificate_sha256"] for s in res.signers] == [signer.fingerprint]
    names = {c.name for c in res.checks if c.status == "ok"}
    assert {"PDF signature intact and covering every byte", "signer trusted",
            "manifest.json.p7s verifies manifest.json", "evidence artifacts match their sha256"} <= names
    # a trust folder works like a file
    assert verify_report(signed.pdf_path, trust=[keys / "signer"]).trusted
    # the sign-off page and the document control name the signer and the certificate fingerprint
    text = re.sub(r"\s+", "", "".join(p.extract_text() or "" for p in PdfReader(signed.pdf_path).pages))
    assert "A.Validator" in text and signer.fingerprint in text
    doc = json.loads(signed.json_path.read_text())
    assert doc["document"]["signature"]["certificate_sha256"] == signer.fingerprint
    assert doc["document"]["status"] == "Digitally signed"


def test_signed_report_without_trust_is_not_verified_unless_the_signer_check_is_skipped(signed):
    res = verify_report(signed.pdf_path)
    assert not res.ok and "signer trusted" in _problems(res)
    assert "no certificate to trust was given" in _problems(res)["signer trusted"]
    skipped = verify_report(signed.pdf_path, skip=["signature"])
    assert skipped.ok and skipped.integrity_only and not skipped.trusted


def test_the_forgers_own_certificate_is_not_trusted(signed, keys):
    res = verify_report(signed.pdf_path, trust=[keys / "forger" / "cert.pem"])
    assert not res.ok and "not issued by any --trust certificate" in _problems(res)["signer trusted"]


def test_rebuilt_forgery_with_the_same_generated_at_fails_when_the_original_was_signed(finished_run, signed, keys,
                                                                                        tmp_path):
    """Issue 20: a report rebuilt with the public API from an edited run document (accuracy 0.999, same
    generated_at) got the original's report ID and passed verify. Signed, it cannot pass."""
    from governance.report.signing import load_identity

    original = json.loads(signed.json_path.read_text())
    edited = finished_run.to_dict()
    edited["performance"] = {"evaluation": {"accuracy": 0.999, "n": 64}}
    host = make_host(None, sections_hook=False)
    trust = [keys / "signer" / "cert.pem"]
    unsigned = build_report(edited, workdir=finished_run.workdir, out_dir=tmp_path / "unsigned", plugin_host=host,
                            generated_at=original["generated_at"])
    forger = load_identity(keys / "forger" / "key.pem", keys / "forger" / "cert.pem")
    resigned = build_report(edited, workdir=finished_run.workdir, out_dir=tmp_path / "resigned", plugin_host=host,
                            generated_at=original["generated_at"], signing=forger)
    assert json.loads(unsigned.json_path.read_text())["performance"]["evaluation"]["accuracy"] == 0.999
    assert len({signed.report_id, unsigned.report_id, resigned.report_id}) == 3  # IDs no longer collide
    assert verify_report(signed.pdf_path, trust=trust).ok
    res = verify_report(unsigned.pdf_path, trust=trust)
    assert not res.ok and INTEGRITY_ONLY in _problems(res)["PDF signature"]
    res = verify_report(resigned.pdf_path, trust=trust)
    assert not res.ok and "not issued by any --trust certificate" in _problems(res)["signer trusted"]
    # swapping the forged PDF into the genuine bundle fails too
    shutil.copy(resigned.pdf_path, signed.out_dir.parent / "swapped.pdf")
    assert not verify_report(signed.out_dir.parent / "swapped.pdf", trust=trust, skip=["sidecar", "files"]).ok


def _flip_positions(data: bytes) -> list[int]:
    """Byte positions spread over the file plus the signature's own parts: its dictionary, the CMS container,
    the zero padding after it, and the trailer of the signing revision."""
    import io

    from pyhanko.pdf_utils.reader import PdfFileReader

    from governance.report.signature_check import _der_length

    sig = PdfFileReader(io.BytesIO(data)).embedded_signatures[0]
    _, b, c, _ = sig.byte_range
    der_end = b + 1 + 2 * _der_length(bytes.fromhex(data[b + 1:c - 1].decode()))
    assert der_end < c - 100  # the container has zero padding after the CMS structure
    spread = [int(len(data) * k / 16) for k in range(16)]
    special = [b - 40, b + 1, b + 3, b + 200, der_end + 10, (der_end + c) // 2, c - 3, c - 2, c + 5, len(data) - 30,
               len(data) - 1]
    return sorted({p for p in spread + special if 0 <= p < len(data)})


def test_any_flipped_byte_fails_even_without_the_sidecar(bundle, keys):
    """Issue 20: a PDF with one byte flipped and its .sha256 sidecar deleted verified. Now the signature
    covers every byte, including the zero padding of its own container."""
    trust = [keys / "signer" / "cert.pem"]
    (bundle / "report.pdf.sha256").unlink()
    pdf = bundle / "report.pdf"
    data = pdf.read_bytes()
    assert not verify_report(pdf, trust=trust).ok  # the missing sidecar alone already fails closed
    assert verify_report(pdf, trust=trust, skip=["sidecar"]).ok
    passed = []
    for pos in _flip_positions(data):
        flipped = bytearray(data)
        flipped[pos] = flipped[pos] ^ 0x01 if chr(data[pos]) not in "0123456789abcdefABCDEF" else ord(
            "1" if data[pos] != ord("1") else "2")
        pdf.write_bytes(bytes(flipped))
        if verify_report(pdf, trust=trust, skip=["sidecar"]).ok:
            passed.append(pos)
    assert not passed, f"flipping the byte at {passed} went unnoticed"


def test_appended_bytes_and_a_stripped_signature_fail(bundle, keys):
    trust = [keys / "signer" / "cert.pem"]
    pdf = bundle / "report.pdf"
    data = pdf.read_bytes()
    pdf.write_bytes(data + b"\n% appended after signing\n")
    res = verify_report(pdf, trust=trust, skip=["sidecar"])
    assert not res.ok and "added to the PDF after it was signed" in _problems(res)[
        "PDF signature intact and covering every byte"]
    # cut the signing revision off: what is left is the unsigned original, whose report.json names a signer
    first_eof = data.index(b"%%EOF") + len(b"%%EOF\n")
    pdf.write_bytes(data[:first_eof])
    res = verify_report(pdf, trust=trust, skip=["sidecar"])
    assert not res.ok and "carries no signature" in _problems(res)["PDF signature"]


def test_copied_alone_to_another_folder_fails_closed_and_names_what_to_skip(signed, keys, tmp_path, cli_invoke):
    """Issue 20: a report copied alone to another folder verified ("5 checks passed")."""
    alone = tmp_path / "alone" / "report.pdf"
    alone.parent.mkdir()
    shutil.copy(signed.pdf_path, alone)
    trust = str(keys / "signer" / "cert.pem")
    code, out, err = cli_invoke("verify", str(alone), "--trust", trust)
    assert code == 8 and "NOT VERIFIED" in err
    assert "could not run" in err and "--skip sidecar" in err and "--skip files" in err and "--skip evidence" in err
    code, out, err = cli_invoke("verify", str(alone), "--trust", trust, "--skip", "sidecar,files", "--skip", "evidence")
    assert code == 0 and "VERIFIED: report" in out and "signed by A. Validator" in out and "trusted" in out
    assert "skipped: evidence, files, sidecar" in out
    code, out, err = cli_invoke("verify", str(alone), "--skip", "nonsense")
    assert code == 2 and "unknown --skip value(s): nonsense" in err


def test_tampered_manifest_or_its_signature_fails(bundle, keys):
    trust = [keys / "signer" / "cert.pem"]
    sig = bundle / "manifest.json.p7s"
    raw = bytearray(sig.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    sig.write_bytes(bytes(raw))
    assert "manifest.json.p7s verifies manifest.json" in _problems(verify_report(bundle, trust=trust))
    sig.unlink()
    res = verify_report(bundle, trust=trust)
    assert "manifest.json.p7s" in _problems(res)["report files beside the PDF"]
    assert verify_report(bundle, trust=trust, skip=["files"]).ok


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl not installed")
def test_manifest_signature_verifies_with_openssl(signed, keys):
    """The documented way to check the manifest without governance."""
    args = ["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in", str(signed.out_dir / "manifest.json.p7s"),
            "-content", str(signed.manifest_path), "-CAfile", str(keys / "signer" / "cert.pem"), "-purpose", "any",
            "-out", "/dev/null"]
    assert subprocess.run(args, capture_output=True).returncode == 0
    args[args.index("-CAfile") + 1] = str(keys / "forger" / "cert.pem")
    assert subprocess.run(args, capture_output=True).returncode != 0


# --------------------------------------------------------------------------------------------- unsigned reports
def test_unsigned_report_says_integrity_only_and_fails_closed(finished_run, tmp_path, cli_invoke):
    res = build_report(finished_run, out_dir=tmp_path / "u", plugin_host=make_host(None, sections_hook=False))
    code, out, err = cli_invoke("verify", str(res.pdf_path))
    assert code == 8 and INTEGRITY_ONLY in out and "--skip signature" in err
    code, out, err = cli_invoke("verify", str(res.pdf_path), "--skip", "signature")
    assert code == 0 and f"VERIFIED ({INTEGRITY_ONLY})" in out
    text = re.sub(r"\s+", " ", "".join(p.extract_text() or "" for p in PdfReader(res.pdf_path).pages))
    assert "carries no digital signature" in text and "Draft for sign-off" in text


def test_report_ids_are_unique_for_the_same_run_and_second(finished_run):
    from governance.report.document import make_report_id

    doc = finished_run.to_dict()
    ids = {make_report_id(doc, "2026-11-24T10:00:00Z") for _ in range(200)}
    assert len(ids) == 200
    assert len({i.rsplit("-", 1)[0] for i in ids}) == 1  # same content, same second: only the random part differs
    edited = json.loads(json.dumps(doc))
    edited["performance"] = {"evaluation": {"accuracy": 0.999}}
    assert make_report_id(edited, "2026-11-24T10:00:00Z").rsplit("-", 1)[0] != next(iter(ids)).rsplit("-", 1)[0]
