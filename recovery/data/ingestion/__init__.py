"""Ingestion's stages, one module each; the public API is :mod:`recovery.data.ingest`.

``reading`` -> ``candidates`` -> ``parsing`` -> ``checks`` -> ``judging`` ->
``run`` (store and ``quarantine``); ``columns`` declares what each stage adds
to the candidate frame, ``results`` what an ingest returns.

May import :mod:`recovery.data.mapping`, :mod:`recovery.data.store`,
:mod:`recovery.data.ids` and :mod:`simulators`; nothing above ``recovery.data``.
"""
