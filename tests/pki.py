"""A small PKI for tests: roots, intermediates and leaves with chosen dates and names."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
DAY = dt.timedelta(days=1)


@dataclass
class Cert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    issuer: Cert | None = None

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def not_after(self) -> float:
        return self.cert.not_valid_after_utc.timestamp()

    @property
    def not_before(self) -> float:
        return self.cert.not_valid_before_utc.timestamp()

    @property
    def serial(self) -> str:
        return f"{self.cert.serial_number:x}"

    def issue(
        self,
        cn: str,
        *,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        ca: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Cert:
        return make_cert(cn, issuer=self, dns=dns, ips=ips, ca=ca,
                         not_before=not_before, not_after=not_after)

    def write(self, directory: Path, name: str, chain: tuple[Cert, ...] = ()) -> tuple[Path, Path]:
        """Write ``name.crt`` (this certificate then ``chain``) and ``name.key``."""
        cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        cert_path.write_bytes(self.pem + b"".join(c.pem for c in chain))
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


def make_cert(
    cn: str,
    *,
    issuer: Cert | None = None,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    ca: bool = False,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: tuple[x509.ObjectIdentifier, ...] | None = None,
    subject: x509.Name | None = None,
    extensions: tuple[x509.ExtensionType, ...] = (),
) -> Cert:
    """A certificate signed by ``issuer`` (self-signed when None), with a fresh P-256 key.

    ``eku`` replaces the default extended key usages (server and client auth for a leaf,
    none for a CA; ``()`` for none); ``extensions`` are added, non-critical.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name = issuer.cert.subject if issuer else subject
    signing_key = issuer.key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - DAY)
        .not_valid_after(not_after or NOW + 90 * DAY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
    leaf_usages = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
    usages = eku if eku is not None else (() if ca else leaf_usages)
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    return Cert(builder.sign(signing_key, hashes.SHA256()), key, issuer)


def make_root(cn: str, **kwargs: object) -> Cert:
    kwargs.setdefault("not_after", NOW + 3650 * DAY)
    return make_cert(cn, ca=True, **kwargs)  # type: ignore[arg-type]
