"""Built-in tasks (``uses:``), each wrapping the real tool of its field."""

from __future__ import annotations

from collections.abc import Callable

from conveyor.pipelines.tasks.context import TaskContext

BUILTIN = ("dockerfile-lint", "template-lint", "image-build", "image-test", "publish-templates")
PUBLISH = "publish"  # internal: added by the engine at the end of a passing run


def entry_point(name: str) -> Callable[[TaskContext], None]:
    from conveyor.pipelines.tasks import (
        dockerfile_lint,
        image_build,
        image_test,
        publish_templates,
        push_images,
        template_lint,
    )

    table: dict[str, Callable[[TaskContext], None]] = {
        "dockerfile-lint": dockerfile_lint.main,
        "template-lint": template_lint.main,
        "image-build": image_build.main,
        "image-test": image_test.main,
        "publish-templates": publish_templates.main,
        PUBLISH: push_images.main,
    }
    return table[name]
