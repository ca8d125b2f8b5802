"""The jobsched dashboard: a web UI that is a gRPC *client* of the schedulers.

    jobsched dashboard --listen 127.0.0.1:8080 --scheduler 127.0.0.1:50051

An ASGI application (Starlette, served by uvicorn) with a small JSON API for the front end
(`api.py`), Server-Sent Events bridging WatchJob and WatchJobs (`sse.py`), sign-in with an API
key kept server-side behind a signed httpOnly cookie, CSRF checked on every mutating call
(`session.py`), and the Next.js front end's static export (`web/`, built by `make dashboard` into
`static/`). It never touches the database: every call goes through the public API with the
signed-in user's credential, so roles, tenancy and the audit log hold for the UI too.

It imports `jobsched` (the client), never `scheduler`.
"""
