"""``dart serve --ray``: the app of :mod:`dart.serve.app` as a Ray Serve deployment of N replicas.

Each replica builds its own :class:`~dart.detector.Detector` (one per GPU, or CPU replicas) and serves the same
endpoints, limits and page as ``dart serve``; Ray Serve's HTTP proxy spreads the requests over the replicas, and
each replica still batches the requests it holds through its backbone.
"""

from __future__ import annotations

from typing import Any

from dart.errors import DartError
from dart.serve.ray_cluster import ray_reason

APP_NAME = "dart"


def ray_application(setup: Any, classes: list[str], config: Any, *, replicas: int = 1, gpus: float = 0.0,
                    cpus: float = 1.0, threads: int | None = None):
    """The bound Ray Serve application: ``replicas`` copies of the dart app, each with ``gpus`` GPUs and ``cpus``
    CPUs (``threads`` CPU threads; default: its CPUs) and a detector built from ``setup`` (a
    :class:`~dart.setup.Setup`) on ``classes`` with the ``config``'s thresholds."""
    from ray import serve

    kwargs = {"conf": config.conf, "nms": config.nms, "masks": config.masks}
    each = threads or max(1, int(cpus))

    def build():  # runs in each replica
        from dart.backends.base import set_threads
        from dart.serve.app import create_app

        set_threads(each)
        return create_app(setup.build_detector(list(classes) or None, **kwargs), config)

    ingress = serve.ingress(build)()
    deployment = serve.deployment(ingress, name="DartDetector", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": cpus, "num_gpus": gpus},
                                  max_ongoing_requests=config.queue_size + config.max_batch)
    return deployment.bind()


def serve_on_ray(app, *, host: str = "127.0.0.1", port: int = 8000, blocking: bool = True) -> None:
    """Start Ray Serve's HTTP proxy on ``host:port`` (Ray must be running: :func:`~dart.serve.ray_cluster.ray_started`)
    and deploy ``app`` at ``/``; with ``blocking``, serve until Ctrl-C. A replica that cannot build its detector
    is one sentence (:func:`stop_serving` takes down what started)."""
    from ray import serve

    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=blocking)
    except (KeyboardInterrupt, DartError):
        raise
    except Exception as exc:  # noqa: BLE001 - Ray reports a replica that failed to start with its traceback
        raise DartError(f"the Ray Serve deployment did not start: {ray_reason(exc)}") from None


def stop_serving(started: bool) -> None:
    """Take the deployment down (and Ray, when this process started it)."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        if started:
            ray.shutdown()
