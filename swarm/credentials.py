"""Credentials of a swarm that spans machines: made by `swarm head`, carried to nodes by a person.

- password (the default off loopback): user `swarm` and a random password, carried in the join
  URL that `swarm head` prints (`nats://swarm:PASSWORD@host:port`);
- nkey: an Ed25519 user key; the server knows its public key, the node needs the seed file
  (`swarm join URL --nkey node.nk`, after copying the file);
- TLS: a CA and a server certificate for the head's addresses; nodes need the CA file
  (`--tls-ca ca.pem`). Bring your own certificate and key instead with --tls-cert/--tls-key.

Everything is written under <swarm dir>/credentials, readable by its owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from swarm.ground.errors import ConfigError
from swarm.ground.settings import Credentials

USER = "swarm"


def write_private(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def password(folder: Path) -> str:
    """The swarm's password: made once, kept, so a restarted head lets its nodes back in."""
    path = folder / "password"
    if path.is_file():
        return path.read_text().strip()
    value = secrets.token_urlsafe(24)
    write_private(path, value.encode())
    return value


def nkey(folder: Path) -> tuple[Path, str]:
    """A user nkey seed file (made once) and its public key."""
    import nkeys

    path = folder / "node.nk"
    if not path.is_file():
        write_private(path, nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
    return path, nkeys.from_seed(bytearray(path.read_bytes().strip())).public_key.decode()


def tls(folder: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `hosts` (names or IP addresses): (cert, key, ca)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    cert_path, key_path, ca_path = folder / "server.pem", folder / "server-key.pem", folder / "ca.pem"
    if cert_path.is_file() and key_path.is_file() and ca_path.is_file():
        return cert_path, key_path, ca_path
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "swarm CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))  # fmt: skip
    pem = serialization.Encoding.PEM
    write_private(key_path, key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    write_private(cert_path, cert.public_bytes(pem))
    write_private(ca_path, ca.public_bytes(pem))
    return cert_path, key_path, ca_path


def left_by_head(folder: Path) -> Credentials:
    """What a head keeps in `folder` that its own machine's readers may use: password, nkey seed, CA."""
    found: dict[str, Any] = {}
    if (folder / "password").is_file():
        found.update(user=USER, password=(folder / "password").read_text().strip())
    if (folder / "node.nk").is_file():
        found["nkey_seed_file"] = folder / "node.nk"
    if (folder / "ca.pem").is_file():
        found["tls_ca"] = folder / "ca.pem"
    return Credentials(**found)


def with_password(url: str, secret: str) -> str:
    """`url` with the swarm's user and password in it (what the join command carries)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{USER}:{quote(secret, safe='')}@{f'[{host}]' if ':' in host else host}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def split_url(url: str) -> tuple[str, str | None, str | None]:
    """(url without credentials, user, password): children get credentials by environment, not argv."""
    parts = urlsplit(url)
    if parts.scheme not in ("nats", "tls", "ws", "wss"):
        raise ConfigError(f"{url!r} is not a NATS URL like nats://host:4222")
    if parts.hostname is None:
        raise ConfigError(f"{url!r} names no host")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    clean = urlunsplit((parts.scheme, f"{host}:{parts.port or 4222}", "", "", ""))
    return clean, parts.username, parts.password


def split_urls(urls: str, given: Credentials) -> tuple[list[str], Credentials]:
    """`split_url` for a comma-separated list: (urls without credentials, `given` with theirs). What the
    URLs carry wins over the user and password given; with a password, the user is at least USER."""
    clean, found_user, found_password = [], None, None
    for part in urls.split(","):
        url, part_user, part_password = split_url(part.strip())
        clean.append(url)
        found_user, found_password = found_user or part_user, found_password or part_password
    password = found_password or given.password
    user = found_user or given.user or (USER if password else None)
    return clean, given.model_copy(update={"user": user, "password": password})
