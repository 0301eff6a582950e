"""`citysense certs --renew`: a new server key and certificate under the same CA, the key as
the operator set it up for the broker (owner, group, group read), never readable by others."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from citysense.certs import TlsFiles, _write_key, ensure


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another owner needs root")
def test_a_renewed_key_keeps_what_the_operator_gave_the_broker(tmp_path: Path) -> None:
    files = ensure(TlsFiles(tmp_path / "tls"), ("localhost",))
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    os.chown(files.key, 0, 65533)  # root's, the broker's group may read it
    os.chmod(files.key, 0o644)  # and, by mistake, everybody
    old_key, ca = files.key.read_bytes(), files.ca_cert.read_bytes()
    ensure(files, ("localhost", "broker.example"), renew=True)
    after = files.key.stat()
    assert files.key.read_bytes() != old_key and files.ca_cert.read_bytes() == ca
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (0, 65533, 0o640)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    issuer = x509.load_pem_x509_certificate(ca)
    cert.verify_directly_issued_by(issuer)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.example" in names.get_values_for_type(x509.DNSName)


def test_a_key_and_certificate_that_do_not_go_together_are_issued_again(tmp_path: Path) -> None:
    """A renewal stopped between its two files (the new key, the old certificate): the next
    set-up issues both again rather than keep a pair the broker refuses to start with. So
    does a CA made again (its key lost): the old certificate is no longer its."""
    files = ensure(TlsFiles(tmp_path / "tls"), ("localhost",))
    kept = files.cert.read_bytes()
    ensure(files, ("localhost",))
    assert files.cert.read_bytes() == kept  # a pair: kept
    _write_key(files.key, ec.generate_private_key(ec.SECP256R1()))  # then the crash
    ensure(files, ("localhost",))
    assert files.cert.read_bytes() != kept and _pair(files)
    files.ca_key.unlink()
    ensure(files, ("localhost",))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    x509.load_pem_x509_certificate(files.cert.read_bytes()).verify_directly_issued_by(ca)
    assert _pair(files)


def _pair(files: TlsFiles) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    return cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)


def test_a_key_in_a_folder_only_its_owner_enters_stays_readable_when_renewed(
    tmp_path: Path,
) -> None:
    """The compose stack's secrets (citysense.secrets): the broker's container runs as its own
    user and reads the key as mounted. Renewed, it must stay readable, or the broker cannot
    start; elsewhere others' read is dropped (the test above)."""
    folder = tmp_path / "secrets"
    folder.mkdir(mode=0o700)
    files = ensure(TlsFiles(folder), ("localhost",))
    os.chmod(files.key, 0o644)
    ensure(files, ("localhost",), renew=True)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o644
    assert stat.S_IMODE(files.ca_key.stat().st_mode) == 0o600
    os.chmod(folder, 0o755)  # a folder others may enter: the key is no longer theirs to read
    ensure(files, ("localhost",), renew=True)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o640
