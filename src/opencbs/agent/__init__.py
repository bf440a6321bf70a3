"""The backup agent: runs backup jobs and reports them to the server over the agent API.

Services (the CLI, quickstart, flush and a scheduler call these): ``agent.targets`` (which set,
destination and folder), ``agent.trust`` (what the agent's owner accepted: sources and
destination folders kept on the agent, server changes refused), ``agent.job`` (``run_backup``:
one backup job), ``agent.delivery`` (spooled reports to the server), ``agent.restore``. The
HTTP client is ``agent.client``.
"""

from opencbs.agent.client import (
    AgentApiError,
    AgentClient,
    Entry,
    NewDestination,
    RemoteDestination,
    RemoteSet,
    ServerUnreachable,
)
from opencbs.model.jobs import JobRef

__all__ = [
    "AgentApiError",
    "AgentClient",
    "Entry",
    "JobRef",
    "NewDestination",
    "RemoteDestination",
    "RemoteSet",
    "ServerUnreachable",
]
