"""Repository names, tags and digests as the OCI Distribution Specification defines them."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from dataclasses import dataclass

from conveyor.registry.errors import RegistryError

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
MAX_NAME = 255

# Hex lengths of the algorithms this registry computes.
ALGORITHMS = {"sha256": 64, "sha512": 128}


def valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME and bool(NAME_RE.match(name))


def check_name(name: str) -> str:
    if not valid_name(name):
        raise RegistryError("NAME_INVALID", "invalid repository name", detail={"name": name[:300]})
    return name


def valid_tag(tag: str) -> bool:
    return bool(TAG_RE.match(tag))


def check_tag(tag: str) -> str:
    if not valid_tag(tag):
        raise RegistryError("MANIFEST_INVALID", "invalid tag", detail={"tag": tag[:300]})
    return tag


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)


def looks_like_digest(ref: str) -> bool:
    return ":" in ref


def parse_digest(value: str) -> Digest:
    """A digest this registry can verify; anything else is DIGEST_INVALID (400)."""
    m = _DIGEST_RE.match(value)
    if not m:
        raise RegistryError("DIGEST_INVALID", "invalid digest", detail={"digest": value[:300]})
    algo, hexpart = m.group(1), m.group(2)
    want = ALGORITHMS.get(algo)
    if want is None:
        raise RegistryError(
            "DIGEST_INVALID", f"unsupported digest algorithm '{algo}'", detail={"digest": value[:300]}
        )
    if len(hexpart) != want or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise RegistryError("DIGEST_INVALID", "invalid digest", detail={"digest": value[:300]})
    return Digest(algo, hexpart)


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def split_reference(ref: str) -> tuple[str, str]:
    """``repo:tag`` or ``repo@digest`` -> (repo, tag-or-digest)."""
    if "@" in ref:
        name, _, dig = ref.partition("@")
        return name, dig
    name, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        return ref, "latest"
    return name, tag


def prefix_matches(prefix: str, name: str) -> bool:
    """A repository prefix matches whole path components: ``team`` covers ``team`` and ``team/x``."""
    prefix = prefix.strip("/")
    return name == prefix or name.startswith(prefix + "/")


def glob_matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)
