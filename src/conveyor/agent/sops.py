"""SOPS documents encrypted to age recipients: written by the server, read by the agent (and `sops`).

A SOPS file is the plain YAML document with every value selected by its rule replaced by
``ENC[AES256_GCM,data:...,iv:...,tag:...,type:str]`` (AES-256-GCM under a random data key, a
32-byte nonce, the value's path ``key:sub:`` as additional data), plus a ``sops`` mapping: the data
key encrypted to each age recipient (armored age files), ``lastmodified``, and ``mac``, a SHA-512
over every value in document order, itself encrypted with the data key under ``lastmodified``.
This matches getsops/sops 3.x (``aes/cipher.go``, ``sops.go`` Tree.Encrypt/Decrypt,
``stores/stores.go``), so ``sops --decrypt`` with the cluster's key reads what Conveyor writes
(``tests/agent/test_sops.py`` checks that with the real sops).

Conveyor only encrypts ``data`` and ``stringData`` (``encrypted_regex``), so a Secret's name,
namespace and annotations (the value fingerprints) stay readable in a PR diff; the MAC still
covers them, so changing any of them breaks decryption.

It lives in the agent because the agent decrypts; the server imports it to encrypt (the agent
imports no server code). Only ``pyrage`` (age) and ``cryptography`` (AES-GCM) are used.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pyrage  # type: ignore[import-untyped]  # no stubs; used through a few calls
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCRYPTED_REGEX = "^(data|stringData)$"
SOPS_VERSION = "3.13.2"  # the format version written; the one the sops test binary is built at
_NONCE = 32  # sops' nonceSize
_ENC = re.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")
# sops.MACOnlyEncryptedInitialization: sha256(b"sops"), prefixed when mac_only_encrypted is set.
_MAC_ONLY_ENCRYPTED_INIT = hashlib.sha256(b"sops").digest()
_ARMOR_BEGIN = "-----BEGIN AGE ENCRYPTED FILE-----"
_ARMOR_END = "-----END AGE ENCRYPTED FILE-----"

Leaf = str | int | float | bool | bytes


class SopsError(ValueError):
    """A document that cannot be decrypted (no matching key, tampered, malformed); never holds a value."""


# --- age ------------------------------------------------------------------------------------------

def new_identity() -> tuple[str, str]:
    """A fresh age X25519 key pair: (``AGE-SECRET-KEY-1...``, ``age1...``)."""
    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())


def check_recipient(recipient: str) -> str:
    """The recipient if it is an age X25519 public key, else ValueError."""
    try:
        pyrage.x25519.Recipient.from_str(recipient)
    except Exception as exc:  # pyrage raises its own RecipientError / ValueError
        raise ValueError(f"not an age public key (age1...): {exc}") from None
    return recipient


def recipient_of(identity: str) -> str:
    return str(pyrage.x25519.Identity.from_str(identity.strip()).to_public())


def _armor(data: bytes) -> str:
    b64 = base64.b64encode(data).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "\n".join([_ARMOR_BEGIN, *lines, _ARMOR_END]) + "\n"


def _dearmor(text: str) -> bytes:
    lines = [line.strip() for line in text.strip().splitlines()]
    if len(lines) < 2 or lines[0] != _ARMOR_BEGIN or lines[-1] != _ARMOR_END:
        raise SopsError("the age data key is not an armored age file")
    return base64.b64decode("".join(lines[1:-1]), validate=True)


# --- values -----------------------------------------------------------------------------------------

def _to_bytes(value: Leaf) -> bytes:
    """sops.ToBytes: what the MAC hashes for a value."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"True" if value else b"False"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).removesuffix(".0").encode()
    return value.encode()


def _type_of(value: Leaf) -> str:
    if isinstance(value, bytes):
        return "bytes"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def encrypt_value(value: Leaf, key: bytes, aad: str) -> str:
    """aes.Cipher.Encrypt: an empty string stays empty, as in sops."""
    if value in ("", b""):
        return ""
    nonce = os.urandom(_NONCE)
    sealed = AESGCM(key).encrypt(nonce, _to_bytes(value), aad.encode())
    b64 = base64.b64encode
    return (f"ENC[AES256_GCM,data:{b64(sealed[:-16]).decode()},iv:{b64(nonce).decode()},"
            f"tag:{b64(sealed[-16:]).decode()},type:{_type_of(value)}]")


def decrypt_value(text: str, key: bytes, aad: str) -> Leaf:
    if text == "":
        return ""
    m = _ENC.match(text)
    if m is None:
        raise SopsError("a value does not match sops' data format")
    try:
        data, iv, tag = (base64.b64decode(g, validate=True) for g in m.group(1, 2, 3))
        plain = AESGCM(key).decrypt(iv, data + tag, aad.encode())
    except (InvalidTag, ValueError):
        raise SopsError("a value failed authentication (wrong data key or changed document)") from None
    return _typed(plain, m.group(4))


def _typed(plain: bytes, kind: str) -> Leaf:
    text = plain.decode()
    if kind == "str":
        return text
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text.lower() == "true"
    if kind == "bytes":
        return plain
    raise SopsError(f"unsupported sops value type {kind!r}")


# --- the tree ---------------------------------------------------------------------------------------

class _Rules:
    """sops.Tree.shouldBeEncrypted for the path rules (comments are not kept by this reader)."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = {k: meta.get(k) for k in ("unencrypted_suffix", "encrypted_suffix",
                                              "unencrypted_regex", "encrypted_regex")}
        if sum(1 for v in self.meta.values() if v) > 1:
            raise SopsError("more than one encryption rule in the sops metadata")
        if not any(self.meta.values()):
            self.meta["unencrypted_suffix"] = "_unencrypted"
        self.mac_only_encrypted = bool(meta.get("mac_only_encrypted"))

    def encrypted(self, path: Sequence[str]) -> bool:
        m = self.meta
        if m["unencrypted_suffix"]:
            return not any(p.endswith(m["unencrypted_suffix"]) for p in path)
        if m["encrypted_suffix"]:
            return any(p.endswith(m["encrypted_suffix"]) for p in path)
        if m["unencrypted_regex"]:
            return not any(re.search(m["unencrypted_regex"], p) for p in path)
        return any(re.search(str(m["encrypted_regex"]), p) for p in path)


def _walk(node: Any, path: tuple[str, ...], leaf: Callable[[Any, tuple[str, ...]], Any]) -> Any:
    """Depth-first in document order, as sops walks (list items keep their parent's path)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if not isinstance(k, str):
                raise SopsError("only string keys are supported")
            out[k] = _walk(v, (*path, k), leaf)
        return out
    if isinstance(node, list):
        return [_walk(v, path, leaf) for v in node]
    if node is None:
        return None
    if isinstance(node, datetime):
        raise SopsError("timestamps are not supported")
    return leaf(node, path)


def _new_hash(rules: _Rules) -> Any:
    h = hashlib.sha512()
    if rules.mac_only_encrypted:
        h.update(_MAC_ONLY_ENCRYPTED_INIT)
    return h


def _rfc3339(when: datetime) -> str:
    """Go's time.RFC3339 formatting, which the MAC's additional data uses."""
    text = when.replace(microsecond=0).isoformat()
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


class _Dumper(yaml.SafeDumper):
    pass


def _str_block(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_block)


def encrypt(doc: dict[str, Any], recipients: Sequence[str], *, encrypted_regex: str = ENCRYPTED_REGEX,
            now: datetime | None = None) -> str:
    """The SOPS YAML text of ``doc`` (one document) encrypted to every age recipient."""
    if not recipients:
        raise ValueError("no age recipient to encrypt to")
    if "sops" in doc:
        raise ValueError("the document already has a sops key")
    key = os.urandom(32)
    meta: dict[str, Any] = {"encrypted_regex": encrypted_regex}
    rules = _Rules(meta)
    h = _new_hash(rules)

    def leaf(value: Any, path: tuple[str, ...]) -> Any:
        encrypted = rules.encrypted(path)
        if not rules.mac_only_encrypted or encrypted:
            h.update(_to_bytes(value))
        return encrypt_value(value, key, ":".join(path) + ":") if encrypted else value

    body = _walk(doc, (), leaf)
    modified = _rfc3339(now or datetime.now(UTC))
    body["sops"] = {
        "age": [{"recipient": r, "enc": _armor(pyrage.encrypt(key, [pyrage.x25519.Recipient.from_str(r)]))}
                for r in recipients],
        "lastmodified": modified,
        "mac": encrypt_value(h.hexdigest().upper(), key, modified),
        **meta,
        "version": SOPS_VERSION,
    }
    return yaml.dump(body, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1 << 16)


def is_sops(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("sops"), dict) and "mac" in doc["sops"]


def recipients(doc: dict[str, Any]) -> list[str]:
    return [str(a.get("recipient", "")) for a in (doc.get("sops") or {}).get("age") or []]


def _data_key(meta: dict[str, Any], identities: Sequence[str]) -> bytes:
    if meta.get("key_groups"):
        raise SopsError("key groups (Shamir) are not supported; encrypt to age recipients directly")
    parsed = [pyrage.x25519.Identity.from_str(i.strip()) for i in identities]
    for entry in meta.get("age") or []:
        try:
            key = pyrage.decrypt(_dearmor(str(entry.get("enc", ""))), parsed)
        except (pyrage.DecryptError, SopsError, ValueError):
            continue
        if len(key) == 32:
            return bytes(key)
    raise SopsError("no age key of this cluster can open the document (encrypted to "
                    + ", ".join(str(a.get("recipient")) for a in meta.get("age") or []) + ")")


def _modified(value: Any) -> str:
    """lastmodified as sops formats it for the MAC's additional data (YAML may have parsed it)."""
    try:
        when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise SopsError("the sops lastmodified is not an RFC 3339 time") from None
    return _rfc3339(when if when.tzinfo else when.replace(tzinfo=UTC))


def decrypt(doc: dict[str, Any], identities: Sequence[str]) -> dict[str, Any]:
    """The plain document of a parsed SOPS document, after checking its MAC; SopsError otherwise."""
    if not is_sops(doc):
        raise SopsError("not a sops document (no sops metadata with a mac)")
    meta = doc["sops"]
    key = _data_key(meta, identities)
    rules = _Rules(meta)
    h = _new_hash(rules)

    def leaf(value: Any, path: tuple[str, ...]) -> Any:
        encrypted = rules.encrypted(path)
        if encrypted:
            if not isinstance(value, str):
                raise SopsError("an encrypted value is not a string")
            value = decrypt_value(value, key, ":".join(path) + ":")
        if not rules.mac_only_encrypted or encrypted:
            h.update(_to_bytes(value))
        return value

    plain = _walk({k: v for k, v in doc.items() if k != "sops"}, (), leaf)
    modified = _modified(meta.get("lastmodified"))
    if decrypt_value(str(meta.get("mac", "")), key, modified) != h.hexdigest().upper():
        raise SopsError("MAC mismatch: the document was changed after it was encrypted")
    return dict(plain)


def decrypt_text(text: str, identities: Sequence[str]) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise SopsError("not a YAML mapping")
    return decrypt(doc, identities)
