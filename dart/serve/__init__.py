"""Serving: ``dart serve``, an HTTP API around one :class:`~dart.detector.Detector`, and scale-out on Ray.

- :mod:`dart.serve.batcher`: requests from many clients queued (bounded) and batched through the backbone;
- :mod:`dart.serve.app`: the FastAPI app (``POST /v1/detect``, ``GET /v1/health``, ``GET /v1/info``, OpenAPI at
  ``/docs``) with upload and pixel limits, an optional API key, and CORS off unless asked for;
- :mod:`dart.serve.ray_serve`: the same app as a Ray Serve deployment of N replicas (``dart serve --ray``);
- :mod:`dart.serve.ray_label`: batch labelling on Ray Data, resumable (``dart detect --ray``);
- :mod:`dart.serve.ray_cluster`: what both Ray commands share (joining a cluster, sizing workers, clean stops).

``ServeConfig`` and ``create_app`` are imported on first use, so the Ray Data side needs no FastAPI.
"""

from __future__ import annotations

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str):
    if name in __all__:
        from dart.serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'dart.serve' has no attribute {name!r}")
