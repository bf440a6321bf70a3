"""HTTP: the CBS JSON API (cbs-api.md) and the agent API, on FastAPI/Starlette."""
