"""Manifest media types and the parsing/validation of manifest documents."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from conveyor.core.errors import InvalidInput
from conveyor.core.limits import MAX_JSON_DEPTH, check_int, check_json
from conveyor.registry.errors import RegistryError
from conveyor.registry.names import parse_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def _invalid(message: str, **detail: Any) -> RegistryError:
    return RegistryError("MANIFEST_INVALID", message, detail=detail or None)


@dataclass
class Descriptor:
    media_type: str
    digest: str
    size: int
    raw: dict[str, Any]

    @property
    def foreign(self) -> bool:
        """Layers the registry is not expected to hold (non-distributable, or fetched from urls)."""
        mt = self.media_type
        return "nondistributable" in mt or "foreign" in mt or bool(self.raw.get("urls"))


@dataclass
class ParsedManifest:
    media_type: str
    blobs: list[Descriptor] = field(default_factory=list)
    children: list[Descriptor] = field(default_factory=list)
    subject: Descriptor | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise _invalid(f"{where} is not a descriptor object")
    mt, dig, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(mt, str) or not mt:
        raise _invalid(f"{where} has no mediaType")
    if not isinstance(dig, str):
        raise _invalid(f"{where} has no digest")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _invalid(f"{where} has an invalid size")
    try:
        parsed = parse_digest(dig)
    except RegistryError:
        raise RegistryError("DIGEST_INVALID", f"{where} has an invalid digest", detail={"digest": dig[:200]}) from None
    return Descriptor(media_type=mt, digest=str(parsed), size=size, raw=value)


def base_media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _load(body: bytes) -> Any:
    """The manifest's JSON within core's request rules (issue 13: nesting, NUL, lone surrogates
    and huge integers each gave a 500 before, from ``json``'s recursion or the database)."""
    try:
        doc = json.loads(body, parse_int=check_int)
        check_json(doc)
    except RecursionError:
        raise _invalid(f"manifest is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except InvalidInput as exc:
        raise _invalid(f"manifest refused: {exc.detail}") from None
    except (ValueError, UnicodeDecodeError):
        raise _invalid("manifest is not valid JSON") from None
    return doc


def parse(body: bytes, content_type: str | None) -> ParsedManifest:
    doc = _load(body)
    if not isinstance(doc, dict):
        raise _invalid("manifest is not a JSON object")
    header_type = base_media_type(content_type)
    body_type = doc.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise _invalid("mediaType must be a string")
    if body_type and header_type in MANIFEST_TYPES and body_type != header_type:
        raise _invalid("Content-Type does not match the manifest's mediaType",
                       content_type=header_type, media_type=body_type)
    if body_type:
        media_type = body_type
    elif header_type in MANIFEST_TYPES:
        media_type = header_type
    elif "manifests" in doc:
        media_type = OCI_INDEX
    else:
        media_type = OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise _invalid(f"unsupported manifest media type '{media_type[:100]}'")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")
    out = ParsedManifest(media_type=media_type)
    if media_type in IMAGE_TYPES:
        out.blobs.append(_descriptor(doc.get("config"), "config"))
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        out.blobs.extend(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers))
    else:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise _invalid("manifests must be a list")
        out.children.extend(_descriptor(c, f"manifests[{i}]") for i, c in enumerate(children))
    if doc.get("subject") is not None:
        out.subject = _descriptor(doc["subject"], "subject")
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _invalid("artifactType must be a string")
    if artifact_type:
        out.artifact_type = artifact_type
    elif media_type == OCI_MANIFEST:
        out.artifact_type = out.blobs[0].media_type
    annotations = doc.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise _invalid("annotations must map strings to strings")
        out.annotations = annotations
    return out
