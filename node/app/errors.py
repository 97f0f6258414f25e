"""Errors of the composition root that the runner turns into one line for the user."""


class NodeStartError(Exception):
    """The node cannot start as configured; the message says what to change."""
