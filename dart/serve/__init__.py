"""Serving: ``dart serve``, an HTTP API around one :class:`~dart.detector.Detector`.

- :mod:`dart.serve.batcher`: requests from many clients queued (bounded) and batched through the backbone;
- :mod:`dart.serve.app`: the FastAPI app (``POST /v1/detect``, ``GET /v1/health``, ``GET /v1/info``, OpenAPI at
  ``/docs``) with upload and pixel limits, an optional API key, and CORS off unless asked for.
"""

from dart.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
