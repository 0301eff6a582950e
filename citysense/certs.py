"""TLS material for the broker: a deployment's own certificate authority and a server
certificate it signs, written with `cryptography` (no openssl command line to drive).

`citysense certs --out DIR --host mqtt.example.org` writes `ca.crt`, `ca.key`, `server.crt` and
`server.key` (keys readable by their owner only). An existing CA is reused, so devices that
trust it keep trusting the broker after its certificate is renewed; operators with their own PKI
skip this command and point the broker at their files instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from common.errors import ConfigError
from common.files import replace_whole

CA_YEARS = 10
SERVER_DAYS = 825  # the longest server validity clients such as browsers still accept
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "mosquitto")


@dataclass(frozen=True, slots=True)
class TlsFiles:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca.key"

    @property
    def cert(self) -> Path:
        return self.folder / "server.crt"

    @property
    def key(self) -> Path:
        return self.folder / "server.key"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.cert, self.key))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder for the four files")
    parser.add_argument(
        "--host",
        action="append",
        help="a name or address clients use to reach the broker (repeatable; "
        f"default {', '.join(DEFAULT_HOSTS)})",
    )
    parser.add_argument("--renew", action="store_true", help="replace an existing server cert")


def main(args: argparse.Namespace) -> int:
    files = TlsFiles(args.out)
    if files.complete() and not args.renew:
        raise ConfigError(f"{files.cert} exists; pass --renew to issue a new one")
    ensure(files, tuple(args.host or DEFAULT_HOSTS), renew=True)
    print(f"CA certificate (give it to devices): {files.ca_cert}")
    print(f"server certificate and key: {files.cert}, {files.key}")
    return 0


def ensure(files: TlsFiles, hosts: tuple[str, ...], *, renew: bool = False) -> TlsFiles:
    """The CA (reused when present) and a server certificate for `hosts`: kept unless `renew`,
    or unless it does not go with its key or the CA (a renewal stopped between the two files,
    a CA made again), which a broker would refuse to start with."""
    files.folder.mkdir(parents=True, exist_ok=True)
    if files.ca_cert.is_file() and files.ca_key.is_file():
        ca_key = _load_key(files.ca_key)
        ca_cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    else:
        ca_key, ca_cert = _new_ca()
        _write_key(files.ca_key, ca_key)
        replace_whole(
            files.ca_cert,
            ca_cert.public_bytes(serialization.Encoding.PEM),
            mode=0o644,
            keep_owner=True,
        )
    if renew or not _matching(files, ca_cert):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _server_cert(key, ca_key, ca_cert, hosts)
        _write_key(files.key, key)
        replace_whole(
            files.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644, keep_owner=True
        )
    return files


def _matching(files: TlsFiles, ca_cert: x509.Certificate) -> bool:
    """Whether the server certificate and key are there, go together, and the certificate is
    the CA's."""
    if not (files.cert.is_file() and files.key.is_file()):
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        ours = _load_key(files.key).public_key().public_bytes(serialization.Encoding.DER, spki)
    except ConfigError:
        raise  # a key of another kind: said, not replaced
    except (ValueError, TypeError, InvalidSignature):
        return False  # unreadable (not PEM), or not the CA's: issued again
    return cert.public_key().public_bytes(serialization.Encoding.DER, spki) == ours


def _new_ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "CitySense deployment CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365 * CA_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _server_cert(
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: tuple[str, ...],
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path}: expected an EC private key")
    return key


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Whole, and never readable by others. A key renewed keeps the owner, group and group read
    # an operator gave it for the broker's user; the group read only if the group was kept
    # (common.files). Others' read is kept only in a folder nobody else may enter: the compose
    # stack's secrets (citysense.secrets), where a container's own user reads it.
    kept = 0o744 if _private(path.parent) else 0o740
    mode = path.stat().st_mode & kept if path.exists() else 0o600
    replace_whole(path, data, mode=mode | 0o600, keep_owner=True)


def _private(folder: Path) -> bool:
    return stat.S_IMODE(folder.stat().st_mode) & 0o077 == 0
