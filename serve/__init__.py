"""The OpenAI-compatible HTTP server, in the order a request flows: ``schema`` (the wire
format), ``media`` (media URLs to local files, under the operator's limits), ``handlers``
(plain functions over an injected ``ChatEngine``), ``app`` (the FastAPI application),
``ray_app`` (the same app as Ray Serve replicas) and ``main`` (``launch.py serve``).
HTTP lives here only: ``model/`` never imports this package."""
