"""Single-layer image archives written in Python, for the pod sandbox ("pause") and CoreDNS images.

Public registries are out of reach, so each node gets these images from tarballs in the
``docker save`` format (one layer holding the static binary), imported into the node's containerd.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path

SANDBOX_IMAGE = "conveyor.local/pause:3.10"


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_single_binary_image(binary: Path, ref: str, dest: Path, user: str = "65535:65535") -> Path:
    """A docker-archive tarball of an image whose only file is ``binary`` as its entrypoint."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        _add(layer, binary.name, binary.read_bytes(), 0o755)
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0)),
        "config": {"Entrypoint": [f"/{binary.name}"], "User": user},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "conveyor"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":", 1)[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as out:
        _add(out, config_name, config_bytes)
        _add(out, layer_name, layer_bytes)
        _add(out, "manifest.json", json.dumps(manifest).encode())
    tmp.replace(dest)
    return dest
