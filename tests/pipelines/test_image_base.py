"""The base image a Dockerfile's last stage is built on, as CI annotates it for lineage (no build needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.pipelines.tasks.image_build import final_base


@pytest.mark.parametrize(("text", "args", "want"), [
    ("FROM r:1/cache/shell:1\nRUN true\n", {}, "r:1/cache/shell:1"),
    ("ARG BASE_IMAGE=x/y:1\nFROM $BASE_IMAGE\n", {"BASE_IMAGE": "r:1/cache/other:1"}, "r:1/cache/other:1"),
    ("ARG BASE_IMAGE=x/y:1\nFROM ${BASE_IMAGE}\n", {}, "x/y:1"),
    # The last stage names an earlier one: its base is what that stage was built on.
    ("FROM r:1/cache/a:1 AS build\nRUN make\nFROM build AS test\nFROM test\n", {}, "r:1/cache/a:1"),
    ("FROM r:1/cache/a:1 AS build\nFROM --platform=linux/amd64 r:1/cache/b:2\nCOPY --from=build /x /x\n", {},
     "r:1/cache/b:2"),
    ("FROM scratch\nCOPY x /x\n", {}, None),
])
def test_final_base_follows_args_and_stages(tmp_path: Path, text: str, args: dict[str, str], want: str | None) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    assert final_base(dockerfile, args) == want
