"""Mixed FP16/FP32 ONNX graphs and the precision spec that says what stays in FP32.

A :class:`PrecisionSpec` names ViT blocks (indices of the full backbone, as in prune specs) and/or ONNX node-name
patterns that must run in FP32. :func:`to_mixed_fp16` turns an FP32 export into a graph whose weights and
activations are FP16 except those nodes (inputs and outputs stay FP32). TensorRT builds that graph as a strongly
typed network (the only mode TensorRT 11 has), onnxruntime runs it for ``dart precision`` on machines without a GPU.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dart.errors import DependencyError, InputError
from dart.export.metadata import StageMetadata

FORMAT = "dart-precision-spec-v1"
BLOCK_PATTERN = re.compile(r"(?:^|/)layers\.(\d+)/")


@dataclass(frozen=True)
class PrecisionSpec:
    """What stays FP32 in an FP16 engine: whole ViT blocks (full-backbone indices) and node-name globs."""

    fp32_blocks: tuple[int, ...] = ()
    fp32_layers: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.fp32_blocks or self.fp32_layers)

    def __str__(self) -> str:
        parts = []
        if self.fp32_blocks:
            parts.append("blocks " + ",".join(map(str, self.fp32_blocks)))
        if self.fp32_layers:
            parts.append("layers " + ",".join(self.fp32_layers))
        return "; ".join(parts) or "nothing"

    @classmethod
    def parse(cls, text: str | Sequence[Any] | None) -> PrecisionSpec:
        """``"5,12,/fpn*"``: numbers are blocks, anything else a node-name glob (``*`` and ``?`` allowed)."""
        if text is None or text == "" or text == []:
            return cls()
        items = text.split(",") if isinstance(text, str) else list(text)
        blocks: set[int] = set()
        layers: list[str] = []
        for item in items:
            token = str(item).strip()
            if not token:
                continue
            if token.lstrip("-").isdigit():
                index = int(token)
                if index < 0:
                    raise InputError(f"--fp32-layers: block {index} is negative.")
                blocks.add(index)
            elif token not in layers:
                layers.append(token)
        return cls(tuple(sorted(blocks)), tuple(layers))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "fp32_blocks": list(self.fp32_blocks), "fp32_layers": list(self.fp32_layers)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = "precision spec") -> PrecisionSpec:
        if data.get("format", FORMAT) != FORMAT:
            raise InputError(f"{source} is a '{data.get('format')}' file, not a {FORMAT} precision spec.")
        blocks = data.get("fp32_blocks") or []
        layers = data.get("fp32_layers") or []
        if not isinstance(blocks, list) or not all(isinstance(b, int) and b >= 0 for b in blocks):
            raise InputError(f"{source}: fp32_blocks must be a list of block numbers.")
        if not isinstance(layers, list) or not all(isinstance(s, str) for s in layers):
            raise InputError(f"{source}: fp32_layers must be a list of node-name patterns.")
        return cls(tuple(sorted(set(blocks))), tuple(dict.fromkeys(layers)))

    @classmethod
    def load(cls, path: str | Path) -> PrecisionSpec:
        from dart.io import read_yaml

        data = read_yaml(path, "precision spec") or {}
        if not isinstance(data, dict):
            raise InputError(f"precision spec '{path}' must be a mapping with fp32_blocks and/or fp32_layers.")
        return cls.from_dict(data, path)

    def save(self, path: str | Path, **extra: Any) -> None:
        """Write the spec as JSON (``extra`` keys, e.g. what was measured, are stored beside it)."""
        from dart.io import write_text

        write_text(path, json.dumps({**self.to_dict(), **extra}, indent=2) + "\n")

    def patterns(self) -> list[str]:
        return list(self.fp32_layers)

    def node_names(self, nodes: Iterable[str], meta: StageMetadata | None = None) -> list[str]:
        """The names among ``nodes`` that this spec keeps in FP32 (blocks are mapped through the export's
        pruning: block 12 of the full backbone is ``layers.11`` once one earlier block is removed)."""
        nodes = list(nodes)
        chosen: set[str] = set()
        if self.fp32_blocks:
            position = block_positions(meta)
            missing = [b for b in self.fp32_blocks if b not in position]
            if missing:
                raise InputError(
                    f"precision spec keeps block {missing[0]} in FP32, but that block is not in this backbone "
                    f"({'it was pruned' if meta and meta.num_blocks and missing[0] < meta.num_blocks else 'no such block'})."
                )
            wanted = {position[b] for b in self.fp32_blocks}
            for name in nodes:
                match = BLOCK_PATTERN.search(name)
                if match and int(match.group(1)) in wanted:
                    chosen.add(name)
        for pattern in self.fp32_layers:
            hits = [n for n in nodes if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                raise InputError(f"precision spec pattern '{pattern}' matches no layer of this graph.")
            chosen.update(hits)
        return [n for n in nodes if n in chosen]


def block_positions(meta: StageMetadata | None) -> dict[int, int]:
    """Full-backbone block index -> position in the exported (possibly pruned) graph."""
    if meta is None or not meta.num_blocks:
        return {i: i for i in range(4096)}
    skipped = set(meta.prune_spec.skip_blocks)
    kept = [i for i in range(meta.num_blocks) if i not in skipped]
    return {block: pos for pos, block in enumerate(kept)}


def to_mixed_fp16(model: Any, fp32_nodes: Sequence[str] = ()) -> Any:
    """An FP16 copy of an ONNX ``ModelProto`` with ``fp32_nodes`` kept in FP32; graph inputs/outputs stay FP32."""
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise DependencyError(
            "FP16 graphs are made with onnxconverter-common; install it with `pip install 'dart-detect[onnx]'`."
        ) from exc
    import warnings

    from dart.export.onnx_export import EXTERNAL_DATA_LIMIT, _tensor_bytes

    large = _tensor_bytes(model) > EXTERNAL_DATA_LIMIT  # shape inference on a proto over 2 GB fails
    if fp32_nodes:
        _unshare_initializers(model, set(fp32_nodes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float16.convert_float_to_float16(
            model, keep_io_types=True, node_block_list=list(fp32_nodes) or None, disable_shape_infer=large,
        )


def _unshare_initializers(model: Any, fp32_nodes: set[str]) -> None:
    """Give FP32 nodes their own copy of any initializer they share with FP16 nodes (onnxslim merges equal
    constants, e.g. identical LayerNorm biases), so that each copy can take its node's precision."""
    from onnx import TensorProto

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in inits:
                users.setdefault(name, set()).add(node.name in fp32_nodes)
    shared = {name for name, kinds in users.items() if len(kinds) == 2 and inits[name].data_type == TensorProto.FLOAT}
    for name in shared:
        copy_ = graph.initializer.add()
        copy_.CopyFrom(inits[name])
        copy_.name = f"{name}__fp32"
    for node in graph.node:
        if node.name in fp32_nodes:
            for i, name in enumerate(node.input):
                if name in shared:
                    node.input[i] = f"{name}__fp32"
