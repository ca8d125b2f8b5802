"""Authentication and authorization: credentials (API keys) resolve to a Principal
(scheduler/domain/auth.py), one table maps every RPC to the permission it needs
(permissions.py), and one interceptor enforces it (interceptor.py)."""
