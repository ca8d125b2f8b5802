"""Dispatch: connected executor sessions, claiming work and pushing it to them."""
