"""The backup agent: runs backup jobs and reports them to the server over the agent API."""

from opencbs.agent.client import (
    AgentApiError,
    AgentClient,
    Entry,
    JobRef,
    NewDestination,
    RemoteDestination,
    RemoteJob,
    RemoteSet,
    ServerUnreachable,
)

__all__ = [
    "AgentApiError",
    "AgentClient",
    "Entry",
    "JobRef",
    "NewDestination",
    "RemoteDestination",
    "RemoteJob",
    "RemoteSet",
    "ServerUnreachable",
]
