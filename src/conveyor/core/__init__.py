"""Platform core: configuration, storage, identities, the audit log and event outbox, errors.

Public interface for other components:
"""

from conveyor.core import outbound  # the policy for URLs the server fetches
from conveyor.core.auth import Kind, Permission, Principal, Role, Scope, agent_name, service_principal
from conveyor.core.config import Environment, Settings, cache_dir, environment
from conveyor.core.db import Base, Database, UTCDateTime, after_commit, utcnow
from conveyor.core.errors import Conflict, ConveyorError, Forbidden, InvalidInput, NotFound, Unauthorized, Unprocessable
from conveyor.core.events import OutboxWorker, bind, record
from conveyor.core.http import AppState, PrincipalDep, SessionDep, state_of
from conveyor.core.models import Event  # what an outbox handler is given
from conveyor.core.outbound import AsyncOutboundTransport, OutboundRefused, OutboundTransport
from conveyor.core.outbound import Policy as OutboundPolicy

__all__ = [
    "AppState",
    "Kind",
    "Scope",
    "agent_name",
    "service_principal",
    "AsyncOutboundTransport",
    "OutboundPolicy",
    "OutboundRefused",
    "OutboundTransport",
    "outbound",
    "Base",
    "Conflict",
    "ConveyorError",
    "Database",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "Event",
    "OutboxWorker",
    "Permission",
    "Principal",
    "PrincipalDep",
    "Role",
    "SessionDep",
    "Environment",
    "Settings",
    "cache_dir",
    "environment",
    "UTCDateTime",
    "Unauthorized",
    "Unprocessable",
    "after_commit",
    "record",
    "bind",
    "state_of",
    "utcnow",
]
