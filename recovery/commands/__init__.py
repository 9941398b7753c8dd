"""Subcommands of the ``recovery`` CLI, one module each (see ``recovery.cli``)."""
