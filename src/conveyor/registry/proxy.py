"""Pull-through cache of upstream registries (filled in below)."""

from __future__ import annotations

from conveyor.registry.asgi import Request
from conveyor.registry.errors import RegistryError
from conveyor.registry.manifests import StoredManifest
from conveyor.registry.service import Registry, UpstreamConfig


class Proxy:
    def __init__(self, registry: Registry) -> None:
        self.reg = registry

    async def manifest(self, upstream: UpstreamConfig, name: str, ref: str, with_content: bool) -> StoredManifest:
        raise RegistryError("UNSUPPORTED", "pull-through cache not implemented yet", status=501)

    async def blob(self, req: Request, upstream: UpstreamConfig, name: str, digest: str) -> None:
        raise RegistryError("UNSUPPORTED", "pull-through cache not implemented yet", status=501)
