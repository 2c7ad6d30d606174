"""Image signatures in cosign's format: what Conveyor's CI signs and what the agent verifies.

Stdlib and ``cryptography`` only, so the server (which signs) and the agent (which verifies, and
imports no server code) share one definition of the format:

- the payload is cosign's *simple signing* document: ``critical.image.docker-manifest-digest``
  names the signed manifest, ``critical.identity.docker-reference`` its repository, ``optional``
  carries Conveyor's claims (run, commit, source repository);
- the signature is ECDSA P-256 over the payload's bytes (SHA-256), base64 of the DER encoding;
- both are stored as cosign stores them: an OCI image manifest tagged ``sha256-<hex>.sig`` in the
  image's own repository, one layer per signature (media type
  ``application/vnd.dev.cosign.simplesigning.v1+json``, the payload as the blob, the signature in
  the layer annotation ``dev.cosignproject.cosign/signature``). That is what ``cosign verify --key``
  reads by default; ``tests/registry/test_signatures.py`` checks it with a real cosign.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
KEY_ANNOTATION = "dev.conveyor/key-id"
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MAX_PAYLOAD = 64 * 1024


def signature_tag(digest: str) -> str:
    """cosign's tag for the signatures of ``digest``: ``sha256:ab..`` -> ``sha256-ab...sig``."""
    return digest.replace(":", "-", 1) + ".sig"


def key_id(public_pem: bytes) -> str:
    """A key's name: the SHA-256 of its DER SubjectPublicKeyInfo (stable across PEM formatting)."""
    key = serialization.load_pem_public_key(public_pem)
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def payload(reference: str, digest: str, claims: dict[str, str] | None = None) -> bytes:
    doc = {"critical": {"identity": {"docker-reference": reference},
                        "image": {"docker-manifest-digest": digest}, "type": PAYLOAD_TYPE},
           "optional": dict(claims or {})}
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def sign(private_pem: bytes, data: bytes) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("signing keys are ECDSA P-256")
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def new_key() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a fresh P-256 key: the kind cosign generate-key-pair makes."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_blob(payload_digests: list[str]) -> bytes:
    """The config cosign writes for a signature image (its layers' diff ids are the payloads)."""
    doc = {"architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
           "os": "", "rootfs": {"type": "layers", "diff_ids": payload_digests}, "config": {}}
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class SignatureLayer:
    payload: bytes
    signature: str
    key_id: str

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": SIMPLE_SIGNING, "size": len(self.payload), "digest": _sha256(self.payload),
                "annotations": {SIGNATURE_ANNOTATION: self.signature, KEY_ANNOTATION: self.key_id}}


def signature_manifest(existing_layers: list[dict[str, Any]], new: SignatureLayer) -> tuple[bytes, bytes]:
    """(manifest, config) of the ``.sig`` image with ``new`` appended to the layers it had."""
    layers = [layer for layer in existing_layers
              if (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION) != new.signature]
    layers.append(new.descriptor())
    config = config_blob([str(layer["digest"]) for layer in layers])
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": _sha256(config)},
           "layers": layers}
    return json.dumps(doc, separators=(",", ":")).encode(), config


# --- verification ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_pem: bytes
    state: str = "active"  # active | retired (still trusted: images it signed keep verifying)


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str  # verified | unsigned | foreign-signature | digest-mismatch | unavailable
    message: str
    key_id: str | None = None


def _verify_one(key: TrustedKey, data: bytes, signature: str) -> bool:
    try:
        public = serialization.load_pem_public_key(key.public_pem)
        if not isinstance(public, ec.EllipticCurvePublicKey):
            return False
        public.verify(base64.b64decode(signature, validate=True), data, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False


def check_layers(repository: str, digest: str, layers: list[tuple[bytes, str]], keys: list[TrustedKey]) -> Verdict:
    """Judge the signature layers (payload, signature) found for ``repository@digest``."""
    if not layers:
        return Verdict(False, "unsigned", f"{repository}@{digest} has no signature")
    seen_foreign = False
    for data, signature in layers:
        try:
            doc = json.loads(data)
            critical = doc["critical"]
            signed_digest = critical["image"]["docker-manifest-digest"]
            reference = str(critical["identity"]["docker-reference"])
        except (ValueError, KeyError, TypeError):
            continue
        if critical.get("type") != PAYLOAD_TYPE or signed_digest != digest:
            continue
        # The repository is part of what is signed: a signature copied next to another app's image fails.
        if reference.split("@", 1)[0] != repository and not reference.endswith("/" + repository):
            continue
        for key in keys:
            if _verify_one(key, data, signature):
                return Verdict(True, "verified", f"{repository}@{digest[:19]} signed by {key.key_id[:19]} "
                                                 f"({key.state})", key.key_id)
        seen_foreign = True
    if seen_foreign:
        return Verdict(False, "foreign-signature",
                       f"{repository}@{digest} is signed, but by no key this installation trusts")
    return Verdict(False, "digest-mismatch", f"no signature of {repository} names {digest}")
