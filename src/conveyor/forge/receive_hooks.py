"""git's pre-receive and post-receive hooks for Conveyor's bare repositories.

Run as a plain script by git receive-pack (stdlib only, so each push pays ~30 ms, not an
import of the server). pre-receive enforces branch protection at receive time, so the plain
git client shows the refusal; post-receive spools the accepted ref updates to a durable file
that the server turns into push events (and replays after a crash).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ZERO = "0" * 40


def _git_dir() -> Path:
    return Path(os.environ.get("GIT_DIR", ".")).resolve()


def _read_updates() -> list[dict[str, str]]:
    updates = []
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 3:
            updates.append({"before": parts[0], "after": parts[1], "ref": parts[2]})
    return updates


def _policy() -> dict[str, Any]:
    path = _git_dir() / "conveyor" / "protected.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    if isinstance(data, list):  # the format before server-only branches and PR branches
        data = {"protected": data}
    return data


def _fast_forward(before: str, after: str) -> bool:
    p = subprocess.run(["git", "merge-base", "--is-ancestor", before, after], capture_output=True)
    return p.returncode == 0


def _refusal(u: dict[str, str], policy: dict[str, Any], pusher: str, may_manage: bool) -> str | None:
    ref = u["ref"]
    if not ref.startswith(("refs/heads/", "refs/tags/")):
        return f"{ref}: only branches and tags can be pushed (rule: push.ref-namespace)"
    if not ref.startswith("refs/heads/"):
        return None
    branch = ref.removeprefix("refs/heads/")
    if branch in set(policy.get("protected", [])):
        if u["after"] == ZERO:
            return f"branch '{branch}' is protected and cannot be deleted (rule: protect.delete)"
        return f"branch '{branch}' is protected: it changes only by merging a pull request (rule: protect.direct-push)"
    for prefix in policy.get("server_only", []):
        if branch.startswith(prefix):
            return f"branch '{branch}' is written only by Conveyor's delivery (rule: push.server-only)"
    for prefix in policy.get("managers_only", []):
        if branch.startswith(prefix) and not may_manage:
            return f"branch '{branch}' is an environment branch: it changes by pull request, and only " \
                   "cluster-admins push it (rule: push.env-branch)"
    author = policy.get("pr_branches", {}).get(branch)
    if author and author != pusher and not may_manage and u["before"] != ZERO:
        if u["after"] == ZERO:
            return f"branch '{branch}' is the source of {author}'s open pull request: only they may delete it " \
                   "(rule: push.pr-branch)"
        if not _fast_forward(u["before"], u["after"]):
            return f"branch '{branch}' is the source of {author}'s open pull request: only they may force-push " \
                   "it (rule: push.pr-branch)"
    return None


def pre_receive() -> int:
    policy = _policy()
    pusher = os.environ.get("REMOTE_USER", "")
    may_manage = os.environ.get("CONVEYOR_PUSHER_MAY_MANAGE") == "1"
    errors = [e for u in _read_updates() if (e := _refusal(u, policy, pusher, may_manage))]
    for e in errors:
        print(f"Conveyor: {e}", file=sys.stderr)
    return 1 if errors else 0


def post_receive() -> int:
    updates = _read_updates()
    if not updates:
        return 0
    spool = _git_dir() / "conveyor" / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    push_id = uuid.uuid4().hex
    record = {"push_id": push_id, "pusher": os.environ.get("REMOTE_USER", "unknown"), "updates": updates}
    tmp = spool / f".{push_id}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, spool / f"{push_id}.json")
    return 0


def main() -> int:
    which = sys.argv[1] if len(sys.argv) > 1 else ""
    if which == "pre-receive":
        return pre_receive()
    if which == "post-receive":
        return post_receive()
    print(f"unknown hook {which!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
