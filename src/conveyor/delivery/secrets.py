"""Application secrets: proposed as encrypted documents on an environment branch, reviewed without values.

``conveyor env secret set APP ENV NAME`` encrypts the given keys to the public age key of the
environment's cluster (``conveyor.clusters.age_recipient``) as a SOPS document of a Kubernetes Secret
(``conveyor.agent.sops``) and opens a PR from ``secret/<app>/<env>/<name>-<n>`` to ``env/<env>`` that
writes ``rendered/secrets/<app>/<name>.sops.yaml`` — next to the rendered manifests, so the agent
applies, prunes and rolls it back like them. The PR is the person's (not delivery's), so the
branch's rule for changes other than CI releases applies: a second person approves it.

What is readable in the PR: the Secret's name and namespace, its key names, and one fingerprint per
value — HMAC-SHA256 under an installation secret (``core_settings``), truncated, so reviewers see
which values changed without an offline guess of a weak value being checkable against git alone.
The values themselves are only in the request's memory while encrypting: never in the DB, audit
log, events, PR title or body, statuses, or logs. The server cannot decrypt what it wrote (it has
no private key), so setting a secret replaces all of its keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from conveyor.agent import sops
from conveyor.clusters import age_recipient
from conveyor.core import Conflict, Database, InvalidInput, NotFound, Principal, Settings, record
from conveyor.core.settings_store import get_setting, put_setting
from conveyor.delivery import secret_refs
from conveyor.delivery.contexts import DIFF_CHECK
from conveyor.delivery.environments import Environment
from conveyor.delivery.gitops import current_environments, gitops_repo_names
from conveyor.delivery.models import App
from conveyor.delivery.records import SERVICE_USER
from conveyor.forge import BareRepo, bare, create_pr, get_repo, post_status, write_branch

SECRETS_DIR = "rendered/secrets"
FINGERPRINTS = "conveyor.dev/fingerprints"
FINGERPRINT_SECRET = "delivery.secret-fingerprint-key"
MAX_TOTAL = 512 * 1024  # Kubernetes caps a Secret at 1 MiB; base64 and the envelope take the rest
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
_KEY = re.compile(r"^[-._a-zA-Z0-9]{1,253}$")


@dataclass(frozen=True)
class Proposed:
    repo: str
    pr_number: int
    branch: str
    path: str
    keys: dict[str, str]  # key -> fingerprint
    changes: dict[str, str]  # key -> added | changed | unchanged | removed


def secret_path(app: str, name: str) -> str:
    return f"{SECRETS_DIR}/{app}/{name}.sops.yaml"


def fingerprint(key: bytes, value: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, value, hashlib.sha256).hexdigest()[:16]


def check_names(name: str, values: dict[str, bytes] | None) -> None:
    if not _NAME.match(name):
        raise InvalidInput(f"secret name '{name}' is not a DNS subdomain (a-z, 0-9, '-', '.')", rule="secret.name")
    if values is None:
        return
    if not values:
        raise InvalidInput("a secret needs at least one key", rule="secret.keys")
    for k, v in values.items():
        if not _KEY.match(k):
            raise InvalidInput(f"key '{k[:80]}' may hold only letters, digits, '-', '_' and '.'", rule="secret.key")
        if not v:
            raise InvalidInput(f"key '{k}' has an empty value", rule="secret.value-empty")
    if sum(len(v) for v in values.values()) > MAX_TOTAL:
        raise InvalidInput(f"the values exceed {MAX_TOTAL} bytes in all", rule="secret.size")


def gitops_repo_of(session: Session, app: str, explicit: str | None = None) -> str:
    """The GitOps repository of ``app``: named, delivery's record of the app, else the only one."""
    if explicit:
        if explicit not in gitops_repo_names(session):
            raise NotFound(f"'{explicit}' is not a GitOps repository", rule="secret.gitops-repo")
        return explicit
    row = session.execute(select(App).where(App.name == app)).scalar_one_or_none()
    if row is not None:
        return row.gitops_repo
    names = gitops_repo_names(session)
    if len(names) == 1:
        return names[0]
    raise NotFound(f"app '{app}' is not known to delivery yet and there is not exactly one GitOps repository",
                   rule="secret.gitops-repo")


def environment(session: Session, settings: Settings, repo: str, env: str) -> Environment:
    envs = current_environments(session, settings, repo)
    if env not in envs:
        raise NotFound(f"no environment '{env}' in '{repo}' (known: {', '.join(sorted(envs))})", rule="secret.env")
    return envs[env]


def _document(app: str, env: Environment, name: str, values: dict[str, bytes], fps: dict[str, str]
              ) -> dict[str, Any]:
    import base64

    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": env.namespace(app),
                     "labels": {"app.kubernetes.io/managed-by": "conveyor", "app.kubernetes.io/part-of": app},
                     "annotations": {FINGERPRINTS: ", ".join(f"{k}={fps[k]}" for k in sorted(fps))}},
        "data": {k: base64.b64encode(values[k]).decode() for k in sorted(values)},
    }


def fingerprints_of(text: bytes | None) -> dict[str, str]:
    """key -> fingerprint from a document's readable annotation (no key needed)."""
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text)
        raw = str(doc["metadata"]["annotations"][FINGERPRINTS])
    except (yaml.YAMLError, KeyError, TypeError):
        return {}
    pairs = (p.strip().partition("=") for p in raw.split(","))
    return {k: v for k, _, v in pairs if k}


def _changes(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    out = {k: "removed" for k in before if k not in after}
    for k, fp in after.items():
        out[k] = "added" if k not in before else ("unchanged" if before[k] == fp else "changed")
    return dict(sorted(out.items()))


def _body(app: str, env: Environment, name: str, path: str, changes: dict[str, str], fps: dict[str, str]) -> str:
    lines = [f"Secret `{name}` of `{app}` in `{env.name}` (namespace `{env.namespace(app)}`), encrypted to the "
             f"age key of cluster `{env.cluster}`; only that cluster's agent can decrypt it.", "",
             f"File: `{path}`", "", "| key | change | fingerprint |", "|---|---|---|"]
    lines += [f"| `{k}` | {c} | `{fps.get(k, '-')}` |" for k, c in changes.items()]
    lines += ["", "Values are not shown anywhere; fingerprints are keyed hashes that change when a value does."]
    return "\n".join(lines) + "\n"


def _branch_name(session: Session, settings: Settings, repo: str, app: str, env: str, name: str) -> str:
    git = bare(settings, get_repo(session, repo))
    n = 1
    while git.branch_tip(f"secret/{app}/{env}/{name}-{n}") is not None:
        n += 1
    return f"secret/{app}/{env}/{name}-{n}"


def propose(db: Database | None, session: Session, settings: Settings, principal: Principal, app: str, env_name: str,
            name: str, values: dict[str, bytes] | None, gitops: str | None = None) -> Proposed:
    """Open the PR that sets (``values``) or removes (``None``) the Secret ``name`` of ``app`` in ``env_name``."""
    check_names(name, values)
    repo_name = gitops_repo_of(session, app, gitops)
    env = environment(session, settings, repo_name, env_name)
    repo = get_repo(session, repo_name)
    git = bare(settings, repo)
    path = secret_path(app, name)
    tip = git.branch_tip(env.branch)
    if tip is None:
        raise NotFound(f"environment branch '{env.branch}' does not exist", rule="secret.env")
    before = git.read_file(tip, path)
    if values is None and before is None:
        raise NotFound(f"'{name}' is not a secret of {app} in {env_name}", rule="secret.exists")
    fps: dict[str, str] = {}
    content: bytes | None = None
    if values is not None:
        key = _fingerprint_key(session)
        fps = {k: fingerprint(key, v) for k, v in values.items()}
        doc = _document(app, env, name, values, fps)
        content = sops.encrypt(doc, [age_recipient(session, env.cluster)]).encode()
    changes = _changes(fingerprints_of(before), fps)
    branch = _branch_name(session, settings, repo_name, app, env_name, name)
    verb = "Set" if values is not None else "Remove"
    message = f"{verb} secret {name} of {app} in {env_name}"
    files = {path: content, **_restamped(git, tip, app, env, name, content)}
    head = write_branch(session, settings, principal, repo, branch, files, message, base=tip)
    pr = create_pr(session, settings, principal, repo, source=branch, target=env.branch, title=message,
                   body=_body(app, env, name, path, changes, fps))
    summary = ", ".join(f"{k} {c}" for k, c in changes.items())
    post_status(session, settings, _delivery(), repo, head, state="success", context=DIFF_CHECK,
                description=f"secret {name}: {summary} (encrypted; values not shown)"[:900])
    record(session, actor=principal.name, action=f"delivery.secret_{'set' if values is not None else 'removed'}",
           target=f"{app}/{env_name}/{name}",
           payload={"app": app, "env": env_name, "name": name, "repo": repo_name, "pr": pr.number,
                    "keys": sorted(fps), "fingerprints": fps, "changes": changes})
    return Proposed(repo_name, pr.number, branch, path, fps, changes)


def _fingerprint_key(session: Session) -> bytes:
    """The installation's fingerprint key, made on first use in the request's own transaction (a second
    session would wait for this one's write lock on SQLite)."""
    value = get_setting(session, FINGERPRINT_SECRET)
    if value is None:
        value = secrets.token_hex(32)
        put_setting(session, FINGERPRINT_SECRET, value, "system")
        session.flush()
    return bytes.fromhex(str(value))


def _delivery() -> Principal:
    from conveyor.core import Role, service_principal

    return service_principal(SERVICE_USER, Role.DEVELOPER)


def documents(git: BareRepo, rev: str | None, app: str) -> dict[str, bytes]:
    """The app's encrypted secrets at ``rev`` of an environment branch: name -> document."""
    if rev is None:
        return {}
    out = {}
    for path in git.list_files(rev, f"{SECRETS_DIR}/{app}/"):
        if path.endswith(".sops.yaml"):
            content = git.read_file(rev, path)
            if content is not None:
                out[path.rsplit("/", 1)[-1].removesuffix(".sops.yaml")] = content
    return out


def _restamped(git: BareRepo, tip: str, app: str, env: Environment, name: str, content: bytes | None
               ) -> dict[str, bytes | None]:
    """The rendered manifests with checksums for the new set of secrets (so their users roll), if changed;
    refuses removing a secret that a workload still uses."""
    manifests = git.read_file(tip, f"rendered/{app}.yaml")
    if manifests is None:
        return {}
    docs = documents(git, tip, app)
    if content is None:
        in_use = secret_refs.users(manifests, name)
        if in_use:
            raise Conflict(f"secret '{name}' is still used by {', '.join(in_use)} in {env.name}; deploy a version "
                           "that no longer uses it first", rule="secret.in-use")
        docs.pop(name, None)
    else:
        docs[name] = content
    new = secret_refs.stamp(manifests.decode(), docs, env=env.name, strict=False).encode()
    return {} if new == manifests else {f"rendered/{app}.yaml": new}


def secret_names(session: Session, settings: Settings, app: str, env_name: str, gitops: str | None = None
                 ) -> dict[str, dict[str, str]]:
    """The secrets ``app`` has in ``env_name`` now (on the environment branch): name -> key -> fingerprint."""
    repo_name = gitops_repo_of(session, app, gitops)
    env = environment(session, settings, repo_name, env_name)
    git = bare(settings, get_repo(session, repo_name))
    docs = documents(git, git.branch_tip(env.branch), app)
    return {name: fingerprints_of(text) for name, text in sorted(docs.items())}
