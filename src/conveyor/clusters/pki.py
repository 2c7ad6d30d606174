"""Per-cluster TLS material: one CA, serving and client certificates, the service-account key pair.

Everything is ECDSA P-256 (fast to generate, accepted by every Kubernetes component). Files are
written once and reused, so a resumed ``cluster create`` keeps the identity it started with; keys
are mode 0600. Client certificates carry the identity in the subject (CN = user, O = groups), which
is how the API server's x509 authenticator and RBAC see them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True)
class CertSpec:
    name: str  # file stem: <name>.crt / <name>.key
    common_name: str
    organizations: tuple[str, ...] = ()
    server: bool = False
    client: bool = False
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = field(default=())


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    tmp.replace(path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


class ClusterPKI:
    """The PKI directory of one cluster."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory

    def crt(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def ca_crt(self) -> Path:
        return self.crt("ca")

    @property
    def sa_key(self) -> Path:
        return self.dir / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.dir / "sa.pub"

    def ensure_ca(self, cluster_name: str) -> None:
        if self.ca_crt.exists() and self.key("ca").exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"conveyor-{cluster_name}-ca")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_private(self.key("ca"), _key_pem(key))
        _write_public(self.ca_crt, cert.public_bytes(serialization.Encoding.PEM))

    def _current(self, spec: CertSpec) -> bool:
        """The certificate on disk exists and names what ``spec`` asks for (a cluster made by an older
        Conveyor, whose node had other addresses, gets its certificate reissued by the same CA)."""
        if not (self.crt(spec.name).exists() and self.key(spec.name).exists()):
            return False
        cert = x509.load_pem_x509_certificate(self.crt(spec.name).read_bytes())
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return not spec.ips and not spec.dns_names
        have_ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        return have_ips == set(spec.ips) and set(sans.get_values_for_type(x509.DNSName)) == set(spec.dns_names)

    def ensure_cert(self, spec: CertSpec) -> None:
        if self._current(spec):
            return
        ca_key = _load_key(self.key("ca"))
        ca_cert = x509.load_pem_x509_certificate(self.ca_crt.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in spec.organizations]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name))
        usages = []
        if spec.server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if spec.client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attrs))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=True, key_cert_sign=False, crl_sign=False,
                    content_commitment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in spec.ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write_private(self.key(spec.name), _key_pem(key))
        _write_public(self.crt(spec.name), cert.public_bytes(serialization.Encoding.PEM))

    def ensure_service_account_keys(self) -> None:
        if self.sa_key.exists() and self.sa_pub.exists():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(self.sa_key, _key_pem(key))
        _write_public(
            self.sa_pub,
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


def cluster_cert_specs(node_name: str, service_ip: str, node_ip: str, host_gateway: str) -> list[CertSpec]:
    """Every certificate a local cluster uses, by the component that presents it."""
    api_dns = (
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    return [
        CertSpec("etcd-server", "etcd", server=True, client=True, dns_names=("localhost",), ips=("127.0.0.1",)),
        CertSpec("etcd-client", "kube-apiserver-etcd-client", client=True),
        CertSpec(
            "apiserver", "kube-apiserver", server=True, dns_names=api_dns, ips=("127.0.0.1", service_ip, host_gateway)
        ),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",), client=True),
        CertSpec("admin", "conveyor-admin", ("system:masters",), client=True),
        CertSpec("controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("scheduler", "system:kube-scheduler", client=True),
        CertSpec("kube-proxy", "system:kube-proxy", ("system:node-proxier",), client=True),
        CertSpec("kubelet-client", f"system:node:{node_name}", ("system:nodes",), client=True),
        CertSpec(
            "kubelet-server", node_name, server=True, dns_names=(node_name, "localhost"), ips=("127.0.0.1", node_ip)
        ),
    ]
