"""``python -m conveyor.pipelines.tasks``: run one built-in task in its own process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conveyor.pipelines.tasks import entry_point
from conveyor.pipelines.tasks.context import TaskContext, TaskFailed


def main() -> int:
    ctx = TaskContext.load(Path(os.environ["CONVEYOR_TASK_CONTEXT"]))
    try:
        entry_point(ctx.task)(ctx)
    except TaskFailed as exc:
        ctx.result["message"] = str(exc)
        ctx.save()
        print(f"error: {exc}", flush=True)
        return 1
    ctx.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
