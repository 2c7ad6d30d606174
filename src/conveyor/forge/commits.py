"""Server-side commits: write files to a branch without a work tree, publish with compare-and-swap.

Used by components that change repositories themselves (delivery writes GitOps branches). The
ref update is recorded as a push, so webhooks, pipelines and PRs react exactly as to a git push.
"""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from conveyor.core import Conflict, Principal, Settings
from conveyor.forge.git import ZERO
from conveyor.forge.models import Repository
from conveyor.forge.names import validate_branch_name
from conveyor.forge.pulls import identity_of
from conveyor.forge.pushes import apply_push
from conveyor.forge.repos import bare


def write_branch(
    session: Session,
    settings: Settings,
    principal: Principal,
    repo: Repository,
    branch: str,
    files: dict[str, bytes | None],
    message: str,
    *,
    base: str | None = None,
    expect: str | None = None,
    replace_dirs: tuple[str, ...] = (),
) -> str:
    """Commit ``files`` on top of ``base`` (default: the branch's tip) and move the branch there.

    ``expect`` is the tip the caller believes the branch has (``None``: the branch must not exist
    yet unless ``base`` is its tip); a different tip is refused rather than overwritten.
    """
    validate_branch_name(branch)
    git = bare(settings, repo)
    current = git.branch_tip(branch)
    parent = base if base is not None else current
    old = expect if expect is not None else current
    commit = git.commit_files(parent, files, message, identity_of(principal.name), replace_dirs)
    if not git.update_ref(f"refs/heads/{branch}", commit, old or ZERO, f"conveyor: {message.splitlines()[0]}"):
        raise Conflict(f"branch '{branch}' of '{repo.name}' moved while writing to it", rule="branch.moved")
    apply_push(
        session, settings, repo, f"write-{uuid.uuid4().hex}", principal.name,
        [{"before": old or ZERO, "after": commit, "ref": f"refs/heads/{branch}"}], via="api",
    )
    return commit
