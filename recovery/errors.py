"""Errors shared across layers.

:class:`UserError` is raised by the library's end-to-end runs
(:mod:`recovery.pipeline`) and by the CLI's commands; it lives here, below
both, so the library never imports the CLI to raise it.
"""

__all__ = ["UserError"]


class UserError(Exception):
    """An error the user can fix; printed without a traceback, exit status 2."""
