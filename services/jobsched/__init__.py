"""jobsched: the shared package — generated stubs (`jobsched.v1`), the client SDK and the CLI.

`jobsched.handler` marks handler functions for `jobsched executor --handlers MODULE`.
"""

from jobsched.handlers import handler

__all__ = ["handler"]
