"""Plumbing on bare repositories through the real ``git`` binary.

Merges are computed with ``git merge-tree --write-tree`` and ``git commit-tree`` outside
the live refs, and published only by ``git update-ref <ref> <new> <old>`` (compare-and-swap).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

ZERO = "0" * 40


class GitError(RuntimeError):
    pass


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


@dataclass(frozen=True)
class MergeResult:
    tree: str | None
    conflicts: list[str]


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str
    author: str


@dataclass(frozen=True)
class FileStat:
    path: str
    added: int | None  # None for binary files
    deleted: int | None


class BareRepo:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _env(self, identity: Identity | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env["GIT_DIR"] = str(self.path)
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["HOME"] = str(self.path)  # keep the user's ~/.gitconfig out of server-side plumbing
        if identity:
            env.update(
                GIT_AUTHOR_NAME=identity.name,
                GIT_AUTHOR_EMAIL=identity.email,
                GIT_COMMITTER_NAME=identity.name,
                GIT_COMMITTER_EMAIL=identity.email,
            )
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        identity: Identity | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["git", *args],
            env=self._env(identity),
            capture_output=True,
            text=True,
            input=input,
        )
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    # --- lifecycle -------------------------------------------------------------------------
    @classmethod
    def init(cls, path: Path, default_branch: str) -> BareRepo:
        subprocess.run(
            ["git", "init", "--bare", "--quiet", "-b", default_branch, str(path)],
            check=True,
            capture_output=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        )
        repo = cls(path)
        repo.run("config", "http.receivepack", "true")
        repo.run("config", "receive.fsckObjects", "true")
        repo.run("config", "core.logAllRefUpdates", "true")
        repo.run("config", "gc.auto", "0")  # gc is scheduled by the server, never inside a push
        return repo

    # --- reading ---------------------------------------------------------------------------
    def rev_parse(self, rev: str) -> str | None:
        p = self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        return p.stdout.strip() or None if p.returncode == 0 else None

    def branch_tip(self, branch: str) -> str | None:
        return self.rev_parse(f"refs/heads/{branch}")

    def branches(self) -> dict[str, str]:
        out = self.run("for-each-ref", "--format=%(objectname) %(refname)", "refs/heads/").stdout
        result = {}
        for line in out.splitlines():
            sha, ref = line.split(" ", 1)
            result[ref.removeprefix("refs/heads/")] = sha
        return result

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        p = self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if p.returncode not in (0, 1):
            raise GitError(p.stderr.strip())
        return p.returncode == 0

    def merge_base(self, a: str, b: str) -> str | None:
        p = self.run("merge-base", a, b, check=False)
        return p.stdout.strip() or None

    def has_commit(self, sha: str) -> bool:
        return self.run("cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode == 0

    def tree_of(self, commit: str) -> str:
        return self.run("rev-parse", f"{commit}^{{tree}}").stdout.strip()

    def commits_between(self, base: str, head: str, limit: int = 250) -> list[Commit]:
        out = self.run("log", f"--max-count={limit}", "--format=%H%x1f%s%x1f%an", f"{base}..{head}").stdout
        commits = []
        for line in out.splitlines():
            sha, subject, author = line.split("\x1f")
            commits.append(Commit(sha, subject, author))
        return commits

    def diffstat(self, base: str, head: str) -> list[FileStat]:
        out = self.run("diff", "--numstat", "-z", "--no-renames", base, head).stdout
        stats = []
        for rec in out.split("\0"):
            if not rec:
                continue
            added, deleted, path = rec.split("\t", 2)
            stats.append(
                FileStat(path, None if added == "-" else int(added), None if deleted == "-" else int(deleted))
            )
        return stats

    def diff(self, base: str, head: str, max_bytes: int = 2_000_000) -> str:
        out = self.run("diff", "--no-color", base, head).stdout
        return out if len(out) <= max_bytes else out[:max_bytes] + "\n[diff truncated]\n"

    # --- writing ---------------------------------------------------------------------------
    def merge_tree(self, ours: str, theirs: str) -> MergeResult:
        p = self.run("merge-tree", "--write-tree", "--name-only", "--no-messages", ours, theirs, check=False)
        lines = p.stdout.splitlines()
        if p.returncode == 0:
            return MergeResult(lines[0].strip(), [])
        if p.returncode == 1:
            return MergeResult(None, sorted({ln for ln in lines[1:] if ln.strip()}))
        raise GitError(f"merge-tree failed: {p.stderr.strip()}")

    def commit_tree(self, tree: str, parents: list[str], message: str, identity: Identity) -> str:
        args = ["commit-tree", tree]
        for parent in parents:
            args += ["-p", parent]
        return self.run(*args, identity=identity, input=message).stdout.strip()

    def update_ref(self, ref: str, new: str, old: str, reason: str) -> bool:
        """Compare-and-swap: moves ``ref`` to ``new`` only if it still points at ``old``."""
        p = self.run("update-ref", "-m", reason, ref, new, old, check=False)
        return p.returncode == 0

    def create_ref(self, ref: str, new: str, reason: str) -> bool:
        return self.update_ref(ref, new, ZERO, reason)

    def read_file(self, rev: str, path: str) -> bytes | None:
        p = subprocess.run(["git", "cat-file", "blob", f"{rev}:{path}"], env=self._env(), capture_output=True)
        return p.stdout if p.returncode == 0 else None

    def list_files(self, rev: str, prefix: str = "") -> list[str]:
        args = ["ls-tree", "-r", "-z", "--name-only", rev]
        if prefix:
            args += ["--", prefix]
        return [f for f in self.run(*args).stdout.split("\0") if f]

    def commit_files(
        self,
        parent: str | None,
        files: dict[str, bytes | None],
        message: str,
        identity: Identity,
        replace_dirs: tuple[str, ...] = (),
    ) -> str:
        """A commit on ``parent`` that writes (or, for None, deletes) ``files``; no work tree involved.

        Directories in ``replace_dirs`` are emptied first, so files that are not written again vanish.
        """
        with tempfile.TemporaryDirectory(prefix="conveyor-index-") as tmp:
            env = self._env(identity)
            env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")

            def git(*args: str, input: bytes | None = None) -> bytes:
                p = subprocess.run(["git", *args], env=env, input=input, capture_output=True)
                if p.returncode != 0:
                    raise GitError(f"git {args[0]} failed: {p.stderr.decode(errors='replace').strip()}")
                return p.stdout

            if parent:
                git("read-tree", parent)
            else:
                git("read-tree", "--empty")
            for d in replace_dirs:
                git("rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", d.rstrip("/") + "/")
            for path, content in files.items():
                if content is None:
                    # mode 0 drops the entry; --force-remove wants a work tree, which a bare repo lacks
                    git("update-index", "--index-info", input=f"0 {'0' * 40}\t{path}\n".encode())
                    continue
                blob = git("hash-object", "-w", "--stdin", input=content).decode().strip()
                git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
            tree = git("write-tree").decode().strip()
            args = ["commit-tree", tree] + (["-p", parent] if parent else [])
            return git(*args, input=message.encode()).decode().strip()

    def fsck(self) -> subprocess.CompletedProcess[str]:
        return self.run("fsck", "--strict", "--no-progress", check=False)
