"""Artifact content: receiving uploads (uploads.py), reading them back (downloads.py), and the
S3-compatible object store (s3.py); PostgreSQL holds the content unless S3 is configured."""
