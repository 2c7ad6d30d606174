"""``publish-templates``: package the templates and test values as one reproducible archive.

The archive is byte-identical for identical inputs (sorted entries, fixed times and owners), so
its content digest names the templates. It is published when the run has passed.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from conveyor.pipelines.tasks.context import TaskContext, fail, say

MEDIA_TYPE = "application/vnd.conveyor.templates.v1.tar+gzip"


def _add(tar: tarfile.TarFile, arcname: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(arcname)
    info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 0, 0, 0
    tar.addfile(info, io.BytesIO(data))


def main(ctx: TaskContext) -> None:
    app = ctx.need_app()
    rel = ctx.params.get("path") or app.templates_path
    if not rel:
        fail("no templates path: set templates in .conveyor/app.yaml or path in with:")
    root = ctx.path(rel, "templates path")
    if not root.is_dir():
        fail(f"templates directory not found: {rel}")
    values_rel = ctx.params.get("values") or app.test_values
    values = ctx.path(values_rel, "values") if values_rel else None
    if values is not None and not values.is_file():
        fail(f"test values not found: {values_rel}")
    name = ctx.params.get("name") or "templates"
    out = ctx.result_path.parent / f"{name}.tar.gz"
    meta = {"app": app.name, "version": app.version, "build": ctx.build_number, "commit": ctx.commit,
            "kind": app.templates_kind, "path": rel, "test_values": values_rel}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "conveyor-templates.json", json.dumps(meta, sort_keys=True, indent=2).encode())
        files = sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            _add(tar, f"templates/{f.relative_to(root).as_posix()}", f.read_bytes())
        if values is not None:
            _add(tar, f"values/{Path(values_rel or '').name}", values.read_bytes())
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    say(f"packaged {len(files)} template file(s){' and the test values' if values else ''} "
        f"({out.stat().st_size} bytes); published when the run passes")
    ctx.result = {"publish": [{"name": name, "kind": "templates", "path": str(out), "media_type": MEDIA_TYPE}]}
