"""Who signs a report, and the signatures themselves: a PAdES signature inside ``report.pdf`` and a detached
CMS signature over ``manifest.json`` (``manifest.json.p7s``), both made with pyHanko.

A hash chain proves that nothing changed since the report was built; only a signature proves *who* built
it. The key is a PEM (PKCS#8/PKCS#1/SEC1) private key with its certificate, or one PKCS#12 file holding
both. A passphrase, when the key has one, comes from ``GOVERNANCE_SIGN_PASSPHRASE`` only (never from the
command line or the settings file, where it would be kept in shell history or in a file).

``make_test_identity`` (``governance keygen``) writes a key and a self-signed certificate for trying this
out; a real deployment uses a certificate issued by the organisation's CA, and verifiers trust that CA.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from governance.contract.errors import ConfigError, ReportError

PASSPHRASE_ENV = "GOVERNANCE_SIGN_PASSPHRASE"
SIGNATURE_FIELD = "GovernanceSignature"
MANIFEST_SIGNATURE = "manifest.json.p7s"
#: what the report says it carries (ETSI EN 319 142-1 baseline B: no timestamp, no revocation data)
PADES_PROFILE = "PAdES baseline B-B (ETSI.CAdES.detached, sha256)"
_P12_SUFFIXES = (".p12", ".pfx")


@dataclass
class SigningIdentity:
    """A private key and the certificate (plus chain) that names its holder."""

    key: Any  # cryptography private key
    cert: Any  # cryptography x509.Certificate
    chain: list[Any] = field(default_factory=list)
    source: str = ""

    @property
    def fingerprint(self) -> str:
        """sha256 of the certificate's DER bytes (what ``openssl x509 -fingerprint -sha256`` prints)."""
        from cryptography.hazmat.primitives import serialization

        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    @property
    def name(self) -> str:
        return certificate_name(self.cert)

    def describe(self) -> dict[str, Any]:
        """What the report and the MLflow tags record about the signer (public facts only)."""
        return describe_certificate(self.cert) | {"profile": PADES_PROFILE, "manifest_signature": MANIFEST_SIGNATURE}


def certificate_name(cert: Any) -> str:
    """The certificate's common name, else its whole subject."""
    from cryptography.x509.oid import NameOID

    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def describe_certificate(cert: Any) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return {
        "name": certificate_name(cert),
        "organisation": str(orgs[0].value) if orgs else None,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "self_signed": cert.issuer == cert.subject,
        "serial": format(cert.serial_number, "x"),
        "certificate_sha256": hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        "valid_from": cert.not_valid_before_utc.isoformat(timespec="seconds"),
        "valid_until": cert.not_valid_after_utc.isoformat(timespec="seconds"),
    }


# ------------------------------------------------------------------------------------------ loading
def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise ConfigError(f"the signing {what} {path} does not exist",
                          hint="pass --sign-key KEY --sign-cert CERT (make a test pair with `governance keygen`)")
    return path.read_bytes()


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def load_certificates(data: bytes, where: str) -> list[Any]:
    """Every certificate in a PEM bundle, or the one in a DER file."""
    from cryptography import x509

    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ConfigError(f"{where} holds no readable X.509 certificate ({exc})",
                          hint="give a PEM or DER certificate (e.g. the cert.pem `governance keygen` writes)") from None


def _load_pkcs12(path: Path) -> SigningIdentity:
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, cert, extra = pkcs12.load_key_and_certificates(_read(path, "key"), _passphrase())
    except ValueError as exc:
        raise ConfigError(f"cannot open the PKCS#12 file {path}: {exc}",
                          hint=f"set {PASSPHRASE_ENV} to its passphrase, or check that the file is PKCS#12") from None
    if key is None or cert is None:
        raise ConfigError(f"the PKCS#12 file {path} lacks a private key or its certificate",
                          hint="export the key together with its certificate (openssl pkcs12 -export -inkey ... -in ...)")
    return SigningIdentity(key, cert, list(extra or []), str(path))


def _load_pem_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization

    data = _read(path, "key")
    loader = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        return loader(data, password=_passphrase())
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
        raise ConfigError(f"the signing key {path}: {exc}",
                          hint=f"set {PASSPHRASE_ENV} to the key's passphrase (or unset it for an unencrypted key)") from None
    except ValueError as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc}",
                          hint=f"give a PEM/DER private key or a PKCS#12 file; a wrong {PASSPHRASE_ENV} gives this too") from None


def load_identity(key: str | Path, cert: str | Path | None = None) -> SigningIdentity:
    """Load a key and certificate (PEM/DER pair, or one PKCS#12 file as ``key``) and check that they belong
    together, that the certificate is valid now and that it allows signing. Raises ConfigError with a fix."""
    from cryptography.hazmat.primitives import serialization

    key_path = Path(key).expanduser()
    if key_path.suffix.lower() in _P12_SUFFIXES:
        ident = _load_pkcs12(key_path)
        if cert is not None:
            ident.cert = load_certificates(_read(Path(cert).expanduser(), "certificate"), str(cert))[0]
    else:
        if cert is None:
            raise ConfigError(f"a certificate is needed beside the key {key_path}",
                              hint="pass --sign-cert CERT (or one PKCS#12 file as --sign-key)")
        certs = load_certificates(_read(Path(cert).expanduser(), "certificate"), str(cert))
        ident = SigningIdentity(_load_pem_key(key_path), certs[0], certs[1:], str(key_path))
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if ident.key.public_key().public_bytes(enc, pub) != ident.cert.public_key().public_bytes(enc, pub):
        raise ConfigError(f"the signing key {key_path} does not belong to the certificate {cert}",
                          hint="pass the certificate that was issued for this key")
    _check_usable(ident.cert, str(cert or key_path))
    return ident


def identity_for(key: str | Path | None, cert: str | Path | None) -> SigningIdentity | None:
    """The identity ``--sign-key``/``--sign-cert`` (RunSpec ``sign_key``/``sign_cert``) name, or None when no
    key is given (the report is then unsigned). A certificate without a key is an error, not a silent no."""
    if not key:
        if cert:
            raise ConfigError("--sign-cert was given without --sign-key",
                              hint="pass the private key too (or one PKCS#12 file as --sign-key)")
        return None
    return load_identity(key, cert)


def _check_usable(cert: Any, where: str) -> None:
    from cryptography import x509

    now = _dt.datetime.now(_dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ConfigError(f"the signing certificate {where} is not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d}"
                          f" to {cert.not_valid_after_utc:%Y-%m-%d})", hint="renew the certificate")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not (usage.digital_signature or usage.content_commitment):
        raise ConfigError(f"the certificate {where} does not allow signing (key usage lacks digitalSignature)",
                          hint="use a certificate issued for document signing")


# ------------------------------------------------------------------------------------------ signing
def _pyhanko_signer(ident: SigningIdentity) -> Any:
    from asn1crypto import keys as akeys
    from asn1crypto import x509 as ax509
    from cryptography.hazmat.primitives import serialization
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    der = serialization.Encoding.DER
    key = akeys.PrivateKeyInfo.load(ident.key.private_bytes(der, serialization.PrivateFormat.PKCS8,
                                                            serialization.NoEncryption()))
    store = SimpleCertificateStore()
    store.register_multiple([ax509.Certificate.load(c.public_bytes(der)) for c in ident.chain])
    return signers.SimpleSigner(signing_cert=ax509.Certificate.load(ident.cert.public_bytes(der)),
                                signing_key=key, cert_registry=store)


def sign_pdf(path: Path, ident: SigningIdentity, *, reason: str, location: str | None = None) -> None:
    """Add a PAdES signature covering every byte of ``path`` (an incremental update, written in place)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import fields, signers

    meta = signers.PdfSignatureMetadata(field_name=SIGNATURE_FIELD, subfilter=fields.SigSeedSubFilter.PADES,
                                        md_algorithm="sha256", name=ident.name, reason=reason, location=location)
    out = io.BytesIO()
    try:
        with open(path, "rb") as fh:
            signers.sign_pdf(IncrementalPdfFileWriter(fh, strict=False), meta, signer=_pyhanko_signer(ident),
                             output=out)
    except Exception as exc:  # pyHanko raises several types for unusable keys or PDFs
        raise ReportError(f"signing {path.name} failed: {type(exc).__name__}: {exc}",
                          hint="check the key and certificate with `openssl x509 -in CERT -noout -text`") from exc
    path.write_bytes(out.getvalue())


def sign_detached(data: bytes, ident: SigningIdentity) -> bytes:
    """A detached CMS (PKCS#7) signature over ``data``, DER-encoded; ``openssl cms -verify`` reads it."""
    import asyncio

    info = asyncio.run(_pyhanko_signer(ident).async_sign_general_data(data, "sha256", detached=True))
    return info.dump()


# ------------------------------------------------------------------------------------------ keygen
def make_test_identity(out_dir: Path, *, name: str, organisation: str | None = None, days: int = 365,
                       overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``key.pem`` (mode 0600, unencrypted unless GOVERNANCE_SIGN_PASSPHRASE is set) and a self-signed
    ``cert.pem`` (ECDSA P-256, digitalSignature + nonRepudiation). For trying signing out, not for production."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = out_dir / "key.pem", out_dir / "cert.pem"
    if not overwrite and (key_path.exists() or cert_path.exists()):
        raise ConfigError(f"{key_path} or {cert_path} already exists", hint="choose another --out folder or pass --force")
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, name)]
    if organisation:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    subject = x509.Name(attrs)
    now = _dt.datetime.now(_dt.timezone.utc)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    secret = _passphrase()
    encryption = (serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
