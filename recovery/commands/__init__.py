"""Subcommands of the ``recovery`` CLI, one module each (see ``recovery.cli``).

Each module parses its arguments, calls the library and prints the answer;
the rules live in the layers below. ``_common`` holds the argument helpers
the subcommands share.

Layer: the shells, with ``recovery.cli`` and ``recovery.service``; may import
every layer below (``recovery.LAYERS``) and the other shells (``serve`` and
``tokens`` start the service).
"""
