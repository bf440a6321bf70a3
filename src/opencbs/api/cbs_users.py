"""CBS calls about users (cbs-api.md §7): ListUsers, GetUser, AuthUser, AuthSystemUser."""
