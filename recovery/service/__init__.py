"""The engineers' service: HTTP API, web page, tokens and the audit trail.

``recovery serve`` runs :func:`recovery.service.app.create_app` on uvicorn;
``recovery tokens`` manages API tokens (:mod:`recovery.service.auth`).
"""
