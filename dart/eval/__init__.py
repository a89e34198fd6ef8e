"""Accuracy evaluation: ``dart eval coco`` (COCO AP with pycocotools), resumable and shardable across ranks.

- :mod:`dart.eval.coco`: dataset loading, category mapping, scoring with ``COCOeval``, the evaluation loop;
- :mod:`dart.eval.store`: per-image predictions appended as they are made, sharding and merging across ranks;
- :mod:`dart.setup`: the setups (weights, backbone, pruning, backend, image size) compared by
  ``--configs``, also used by ``dart bench``;
- :mod:`dart.eval.report`: the rich tables.
"""

from __future__ import annotations
