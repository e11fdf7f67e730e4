"""A ward certificate authority for the broker's TLS listener (and optional client certs).

Generated with `cryptography`, so no openssl command is needed on the station. Keys are
written 0600; nothing here is ever committed (config/mosquitto/certs/ is git-ignored).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StorageError


@dataclass(frozen=True)
class CertPaths:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def _name(common_name: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "thanthien"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(subject_cn: str, issuer_cert, issuer_key, *, ca: bool, hosts: list[str], days: int,
           client: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = _name(subject_cn)
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
    else:
        sans = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    cert = builder.sign(issuer_key if issuer_key is not None else key, hashes.SHA256())
    return cert, key


def create_ca_and_server(out_dir: Path, hosts: list[str], *, days: int = 3650) -> CertPaths:
    """Create (or keep) the ward CA and a server certificate for ``hosts``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    out_dir = Path(out_dir)
    paths = CertPaths(out_dir / "ca.crt", out_dir / "ca.key", out_dir / "server.crt", out_dir / "server.key")
    if paths.ca_cert.exists() and paths.ca_key.exists():
        try:
            ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
            ca_key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), None)
        except (ValueError, OSError) as exc:
            raise StorageError(f"cannot read the ward CA in {out_dir}: {exc}") from exc
    else:
        ca_cert, ca_key = _issue("thanthien ward CA", None, None, ca=True, hosts=[], days=days)
        _write(paths.ca_key, _pem_key(ca_key), 0o600)
        _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    cert, key = _issue(hosts[0] if hosts else "localhost", ca_cert, ca_key, ca=False,
                       hosts=hosts or ["localhost", "127.0.0.1"], days=min(days, 825))
    _write(paths.server_key, _pem_key(key), 0o600)
    _write(paths.server_cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return paths


def issue_client_cert(out_dir: Path, ca: CertPaths, name: str, *, days: int = 825) -> tuple[Path, Path]:
    """A client certificate for one device, signed by the ward CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_cert = x509.load_pem_x509_certificate(ca.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.ca_key.read_bytes(), None)
    cert, key = _issue(name, ca_cert, ca_key, ca=False, hosts=[], days=days, client=True)
    cert_path, key_path = Path(out_dir) / f"{name}.crt", Path(out_dir) / f"{name}.key"
    _write(key_path, _pem_key(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert_path, key_path
