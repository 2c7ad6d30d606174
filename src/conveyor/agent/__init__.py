"""The Conveyor agent: keeps one cluster equal to its GitOps branches and reports back to the forge.

    conveyor agent run --config agent.yaml [--once]
    conveyor agent status --config agent.yaml [--json]

agent.yaml::

    cluster: {name: alpha, kubeconfig: /path/to/kubeconfig}   # no kubeconfig: in-cluster service account
    forge: {server: http://127.0.0.1:8080, token_file: /path/to/token}
    listen: 127.0.0.1:9797            # GET /status, GET /metrics, GET /healthz, POST /hooks/{sync}
    syncs:
      - name: apps
        url: http://127.0.0.1:8080/git/team/gitops.git
        branch: main
        path: clusters/alpha          # plain YAML files, or a kustomization.yaml (kubectl kustomize)
        interval: 1m
        retry_interval: 10s           # first retry after a failure; doubles up to 10 minutes
        prune: true
        wait: true                    # or health_checks: [{apiVersion, kind, name, namespace}]
        timeout: 5m
        target_namespace: apps        # created if missing; overrides the objects' namespaces
        depends_on: [infra]
        webhook_secret_env: APPS_WEBHOOK_SECRET

Modules, one job each: config (agent.yaml), source (git fetch), build (YAML / kustomize), kube (lightkube access
and kind resolution), apply (dry-run validation, staged server-side apply, prune), inventory (what was applied,
in a ConfigMap per sync), health (kstatus rules), reconciler (one loop per sync), status and metrics (what
/status and /metrics serve), reporter (forge commit statuses), server (HTTP), runner (process), cli.

The agent needs a git URL, a kubeconfig and optionally the forge's statuses API; it never touches Conveyor's
database. Objects it deletes are only ever those recorded in its inventory; `conveyor.dev/prune: disabled` keeps
an object when it leaves the revision, `conveyor.dev/force: "true"` lets it be recreated when an immutable field
changes.

Application secrets: the cluster's age key is a Secret in ``inventory_namespace`` (agekey.py, `conveyor agent key
install|rotate`); SOPS documents in a revision (sops.py) are decrypted in memory before the dry run
(secrets.py) and a document that does not open refuses the whole revision, naming it.

Public interface for other components (delivery's live diff on GitOps PRs, the server's encryption of secrets,
installing a cluster's key at registration, `conveyor agent install` checking the durations it writes):
"""

from conveyor.agent import sops
from conveyor.agent.agekey import install_with as install_age_key
from conveyor.agent.apply import ObjectError, RevisionInvalid
from conveyor.agent.config import parse_duration
from conveyor.agent.health import HealthStatus
from conveyor.agent.observe import SyncState
from conveyor.agent.preview import Change, preview_revision

__all__ = ["Change", "HealthStatus", "ObjectError", "RevisionInvalid", "SyncState", "install_age_key",
           "parse_duration", "preview_revision", "sops"]
