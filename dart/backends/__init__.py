"""How a stage runs: ``torch`` (eager / compile / fp16 / bf16), ``onnxruntime``, ``tensorrt``.

Backends are found through the ``dart.backends`` entry-point group; see :class:`dart.backends.base.Backend`.
"""

from dart.backends.base import Backend, resolve_device

__all__ = ["Backend", "resolve_device"]
