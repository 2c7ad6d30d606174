"""Pipelines: pipeline-as-code (``.conveyor/pipeline.yaml`` + ``app.yaml``), a run queue in the
database served by workers (in ``conveyor up`` and ``conveyor worker``), built-in tasks wrapping real
tools, commit statuses ``conveyor/pr`` and ``conveyor/ci``, logs, secrets and artifacts.

Events recorded (payloads carry run_id, repo, number, pipeline, sha, ref, pr_number, state, attempt,
trigger (push, pull_request.*, manual, retry) and created_by):
``pipeline.run.queued``, ``pipeline.run.started``, ``pipeline.run.requeued``,
``pipeline.run.cancel_requested``, ``pipeline.run.finished`` (+ failed_step, message, url) and, for a
passing ``ci`` run, ``pipeline.ci.succeeded`` with ``image`` {repository, digest, tags} and
``artifacts`` [{name, kind, digest, size, media_type, url}] for the CD stage.

Public interface for other components:
"""

from conveyor.images.debian import build_and_import as build_base_image
from conveyor.pipelines.artifacts import blob_path, get_by_digest
from conveyor.pipelines.listing import FINISHED, Run, get_run, list_runs
from conveyor.pipelines.queue import enqueue

__all__ = ["FINISHED", "Run", "blob_path", "build_base_image", "enqueue", "get_by_digest", "get_run", "list_runs"]
