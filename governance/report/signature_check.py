"""Validate the signatures :mod:`governance.report.signing` makes: the PAdES signature in a PDF and the
detached CMS signature over ``manifest.json``, against certificates the verifier chose to trust.

"Valid" here means all of: the signed digest matches the bytes (intact), the signature verifies with the
signing certificate's key, the certificate chains to one of the trusted certificates (no network is used:
no revocation lookup), the signature covers the whole file (nothing appended after signing), and the
unused zero padding of the signature container is untouched, so that *any* changed byte fails.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from governance.contract.errors import ConfigError

_TRUST_SUFFIXES = (".pem", ".crt", ".cer", ".der")


@dataclass
class SignatureStatus:
    """The outcome for one signature. ``ok`` needs integrity, whole-file coverage and trust."""

    present: bool
    intact: bool = False
    covers_file: bool = False
    trusted: bool | None = None  # None: no trust anchors were given
    signer: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.present and self.intact and self.covers_file and self.trusted is True and not self.problems


def load_trust(paths: list[str | Path] | tuple[str | Path, ...]) -> list[Any]:
    """Certificates from files (PEM bundles or DER) and folders (every .pem/.crt/.cer/.der inside)."""
    from governance.report.signing import load_certificates

    certs: list[Any] = []
    for raw in paths:
        path = Path(raw).expanduser()
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in _TRUST_SUFFIXES) if path.is_dir() else [path]
        if path.is_dir() and not files:
            raise ConfigError(f"the trust folder {path} holds no certificate (.pem, .crt, .cer, .der)",
                              hint="put the signers' (or their CA's) certificates there")
        for f in files:
            if not f.is_file():
                raise ConfigError(f"trusted certificate {f} does not exist", hint="check the --trust path")
            data = f.read_bytes()
            if path.is_dir() and b"-----BEGIN" in data and b"-----BEGIN CERTIFICATE-----" not in data:
                continue  # a key or request kept in the same folder is not a certificate to trust
            certs.extend(load_certificates(data, str(f)))
    if not certs:
        raise ConfigError(f"no certificate found in {', '.join(map(str, paths))}",
                          hint="pass the signer's certificate (or its CA's) with --trust")
    return certs


@contextlib.contextmanager
def _quiet():
    """pyHanko logs every failed path validation with a traceback; the verdict already says what failed."""
    loggers = [logging.getLogger(n) for n in ("pyhanko", "pyhanko_certvalidator")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _asn1(certs: list[Any]) -> list[Any]:
    from asn1crypto import x509 as ax509
    from cryptography.hazmat.primitives import serialization

    return [ax509.Certificate.load(c.public_bytes(serialization.Encoding.DER)) for c in certs]


def _context(trust: list[Any]) -> Any:
    from pyhanko_certvalidator import ValidationContext

    return ValidationContext(trust_roots=_asn1(trust), allow_fetching=False)


def _signer_facts(asn1_cert: Any) -> dict[str, Any]:
    from cryptography import x509

    from governance.report.signing import describe_certificate

    return describe_certificate(x509.load_der_x509_certificate(asn1_cert.dump()))


def _der_length(raw: bytes) -> int | None:
    """Length of the DER SEQUENCE at the start of ``raw`` (header included), or None if it is not one."""
    if len(raw) < 2 or raw[0] != 0x30:
        return None
    first = raw[1]
    if first < 0x80:
        return 2 + first
    n = first & 0x7F
    if n == 0 or n > 4 or len(raw) < 2 + n:
        return None
    return 2 + n + int.from_bytes(raw[2:2 + n], "big")


def _padding_untouched(data: bytes, byte_range: list[int]) -> str | None:
    """The hex string between the two signed ranges must hold the CMS container and zeros only."""
    start, end = byte_range[0] + byte_range[1], byte_range[2]
    gap = data[start:end]
    if len(gap) < 2 or gap[:1] != b"<" or gap[-1:] != b">":
        return "the signature container is not a hex string between the signed byte ranges"
    try:
        raw = bytes.fromhex(gap[1:-1].decode("ascii"))
    except ValueError:
        return "the signature container holds characters that are not hexadecimal"
    length = _der_length(raw)
    if length is None or length > len(raw):
        return "the signature container does not start with a complete CMS structure"
    if any(raw[length:]):
        return "bytes after the signature in its container were changed"
    return None


def check_pdf_signatures(data: bytes, trust: list[Any] | None) -> list[SignatureStatus]:
    """Validate every signature of a PDF, first one first (empty: unsigned). The last must cover the whole
    file; an earlier one (the report's own, under a reviewer's countersignature) must cover its revision,
    with later revisions adding nothing but signatures and form fills. Never raises for a damaged file."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    try:
        with _quiet():
            sigs = PdfFileReader(io.BytesIO(data), strict=False).embedded_signatures
    except Exception as exc:  # pyHanko raises several types on damaged files
        return [SignatureStatus(present=True, problems=[f"the signature validator cannot read the PDF "
                                                        f"({type(exc).__name__}: {exc})"])]
    return [_check_one(data, sig, trust, last=i == len(sigs) - 1) for i, sig in enumerate(sigs)]


def _check_one(data: bytes, sig: Any, trust: list[Any] | None, *, last: bool) -> SignatureStatus:
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.diff_analysis import ModificationLevel

    status = SignatureStatus(present=True)
    try:
        with _quiet():
            result = validate_pdf_signature(sig, _context(trust or []))
    except Exception as exc:
        status.problems.append(f"the signature cannot be validated ({type(exc).__name__}: {exc})")
        return status
    status.signer = _signer_facts(result.signing_cert)
    status.intact = bool(result.intact and result.valid)
    if last:
        status.covers_file = result.coverage == SignatureCoverageLevel.ENTIRE_FILE
    else:
        level = result.modification_level
        status.covers_file = (result.coverage == SignatureCoverageLevel.ENTIRE_REVISION and level is not None
                              and level <= ModificationLevel.FORM_FILLING)
    status.trusted = bool(result.trusted) if trust else None
    if not status.intact:
        status.problems.append("the signed bytes were changed after signing (digest or signature mismatch)")
    if not status.covers_file:
        status.problems.append("bytes were added to the PDF after it was signed" if last else
                               "the PDF was changed after this signature beyond adding signatures")
    if padding := _padding_untouched(data, list(sig.byte_range)):
        status.problems.append(padding)
    return status


def check_detached(data: bytes, signature: bytes, trust: list[Any] | None) -> SignatureStatus:
    """Validate a detached CMS signature (``manifest.json.p7s``) over ``data``."""
    import asyncio

    from asn1crypto import cms
    from pyhanko.sign.validation.generic_cms import async_validate_detached_cms

    status = SignatureStatus(present=True, covers_file=True)
    try:
        info = cms.ContentInfo.load(signature)
        signed = info["content"]
        with _quiet():
            result = asyncio.run(async_validate_detached_cms(data, signed,
                                                             signer_validation_context=_context(trust or [])))
    except Exception as exc:
        status.problems.append(f"the signature file cannot be read ({type(exc).__name__}: {exc})")
        return status
    status.signer = _signer_facts(result.signing_cert)
    status.intact = bool(result.intact and result.valid)
    status.trusted = bool(result.trusted) if trust else None
    if not status.intact:
        status.problems.append("the file does not match its signature")
    return status
