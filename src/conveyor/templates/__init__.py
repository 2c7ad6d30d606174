"""Templates: rendering an app's Helm chart or Kustomization and validating what it renders.

One module for both sides of the workflow, so CI lints exactly what CD deploys: CI's
``template-lint`` renders with the app's test values for the oldest registered cluster, CD renders
with each environment's values for that environment's cluster. Both use the same release name
(the app's name), the same namespace rule (``{app}-{env}`` unless the environment names another
pattern; CI's environment is ``test``), the same image pinning and the same post-processing.

Depends only on core. Callers pass the Kubernetes version the objects are judged by (from
``conveyor.clusters``); nothing here decides which cluster runs what.

Public interface:
"""

from conveyor.templates.bundle import TemplateBundle
from conveyor.templates.render import (
    CI_ENVIRONMENT,
    DEFAULT_NAMESPACE_PATTERN,
    ImageRef,
    RenderError,
    deep_merge,
    namespace_for,
    release_name,
    render,
)
from conveyor.templates.validate import Finding, oldest_version, problems, schema_version, validate

__all__ = [
    "CI_ENVIRONMENT",
    "DEFAULT_NAMESPACE_PATTERN",
    "Finding",
    "ImageRef",
    "RenderError",
    "TemplateBundle",
    "deep_merge",
    "namespace_for",
    "oldest_version",
    "problems",
    "release_name",
    "render",
    "schema_version",
    "validate",
]
