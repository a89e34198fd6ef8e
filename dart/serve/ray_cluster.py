"""What dart's Ray commands share: joining (or starting) a Ray cluster, sizing the workers or replicas from its
resources, stopping cleanly on SIGTERM, and turning Ray's errors into one sentence."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from dart.errors import DartError, DependencyError, InputError

RAY_EXTRA = "pip install 'dart-detect[ray]'"


def ray_started(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address`` (None: ``$RAY_ADDRESS``, else a local Ray started now).
    Returns whether this call started Ray (so the caller shuts it down)."""
    try:
        import ray
    except ImportError as exc:
        raise DependencyError(f"--ray needs Ray ({exc.name} is missing): {RAY_EXTRA}.") from exc
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"at '{address}'" if address else "(local)"
        raise DartError(f"could not connect to the Ray cluster {where}: {str(exc).splitlines()[0]}") from None
    return True


@contextlib.contextmanager
def stopped_as_ctrl_c() -> Iterator[None]:
    """SIGTERM and SIGHUP (a service manager stopping dart, a closed terminal) raise KeyboardInterrupt, as Ctrl-C
    does, so that the Ray instance this process started is shut down instead of left running."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def cluster_resources(setup, workers: int | None, threads: int | None) -> tuple[int, float, float, int | None]:
    """``(workers, GPUs each, CPUs each, threads each)`` for detectors on the Ray cluster (labelling workers or
    serving replicas): one per GPU of the cluster on CUDA, else one CPU worker with the cluster's CPUs (or
    ``workers`` workers sharing them)."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
    on_gpu = str(setup.device).startswith("cuda") or (setup.device == "auto" and gpus > 0)
    if on_gpu:
        if gpus == 0:
            raise InputError(f"--device {setup.device}: the Ray cluster has no GPU; use --device cpu.")
        count = workers or gpus
        return count, 1.0, 1.0, threads
    count = workers or 1
    each = max(1, cpus // count)
    return count, 0.0, float(min(each, threads or each)), threads or each


def ray_reason(exc: BaseException) -> str:
    """The last line of what Ray says went wrong (its errors carry the worker's whole traceback)."""
    cause = getattr(exc, "cause", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return (lines[-1] if lines else type(cause).__name__).rstrip(".") + "."
