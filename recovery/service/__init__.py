"""The engineers' service: HTTP API, web page, tokens and the audit trail.

``recovery serve`` runs :func:`recovery.service.app.create_app` on uvicorn
(``--workers N`` with a PostgreSQL store); ``recovery tokens`` manages API
tokens (:mod:`recovery.service.auth`). :mod:`recovery.service.app` holds the
HTTP part (routes, request models, the body limit); :mod:`recovery.service.core`
the service's logic and caches, independent of HTTP; :mod:`recovery.service.auth`
the tokens, roles and the ownership rule; :mod:`recovery.service.readable` the
figures as the batch page shows them.

Layer: the shells (top). It may import every ``recovery`` layer below it and
``simulators``; nothing below imports it.
"""
