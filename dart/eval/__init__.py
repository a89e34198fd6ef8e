"""Accuracy evaluation: ``dart eval coco`` (COCO AP with pycocotools, resumable and shardable across ranks) and
``dart eval mot`` (tracking: HOTA, CLEAR-MOT and identity metrics, equal to TrackEval's).

- :mod:`dart.eval.coco`: dataset loading, category mapping, scoring with ``COCOeval``, the evaluation loop;
- :mod:`dart.eval.store`: per-image predictions appended as they are made, sharding and merging across ranks;
- :mod:`dart.setup`: the setups (weights, backbone, pruning, backend, image size) compared by
  ``--configs``, also used by ``dart bench``;
- :mod:`dart.eval.report`: the rich tables;
- :mod:`dart.eval.mot`: MOTChallenge files read and scored (numpy and scipy only).
"""

from __future__ import annotations
