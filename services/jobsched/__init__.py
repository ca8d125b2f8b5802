"""jobsched: the shared package — generated stubs (`jobsched.v1`), the client SDK and the CLI."""
