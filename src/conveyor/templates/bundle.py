"""A set of template files with their kind: from CI's published archive or from a checkout."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conveyor.core import InvalidInput

KINDS = ("helm", "kustomize")


class BundleError(InvalidInput):
    title = "Templates failed to render"


@dataclass(frozen=True)
class TemplateBundle:
    """The templates of one app: ``helm`` (a chart) or ``kustomize`` (a kustomization directory)."""

    kind: str
    files: dict[str, bytes]  # path relative to the chart / kustomization root -> content

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BundleError(f"templates have unknown kind {self.kind!r} (helm or kustomize)", rule="render.kind")

    @classmethod
    def from_archive(cls, data: bytes) -> TemplateBundle:
        """CI's ``publish-templates`` archive: ``conveyor-templates.json`` plus ``templates/...``."""
        meta: dict[str, Any] = {}
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for m in tar.getmembers():
                if not m.isfile():
                    continue
                f = tar.extractfile(m)
                content = f.read() if f else b""
                if m.name == "conveyor-templates.json":
                    meta = json.loads(content)
                elif m.name.startswith("templates/") and ".." not in m.name.split("/"):
                    files[m.name[len("templates/"):]] = content
        return cls(kind=str(meta.get("kind")), files=files)

    @classmethod
    def from_directory(cls, root: Path, kind: str) -> TemplateBundle:
        """A chart or kustomization in a checkout (CI's workspace); symlinks out of it are skipped."""
        base = root.resolve()
        files = {}
        for p in sorted(root.rglob("*")):
            if p.is_file() and p.resolve().is_relative_to(base):
                files[p.relative_to(root).as_posix()] = p.read_bytes()
        return cls(kind=kind, files=files)

    def write_to(self, root: Path) -> None:
        for rel, content in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
