"""What an exported stage was built from, stored in the ONNX ``metadata_props`` and in a JSON file beside an engine.

Every ONNX file and engine ``dart`` writes carries its stage, image size, class limit, pruned blocks, backbone
name, the source checkpoint's fingerprint and the dart version. Backends read it back and refuse a mismatch
(an engine built for another image size, block set or checkpoint) with a sentence naming both values.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dart.errors import CheckpointError, InputError
from dart.pruning import PruneSpec

PREFIX = "dart."
STAGES = ("backbone", "encdec")
FPN_NAMES = ("fpn_4x", "fpn_2x", "fpn_1x")
ENCDEC_INPUTS = ("text", "text_mask")
TOKEN_INPUTS = ("prompt_tokens", "prompt_tokens_mask")  # encdec: exemplar prompt tokens from a reference image
ENCDEC_OUTPUTS = ("logits", "boxes", "presence")
MASK_OUTPUT = "masks"
ATTENTION_FORMS = ("eager", "sdpa")  # how an exported graph writes attention (recorded as ``attn``)


def check_attention_form(form: str) -> str:
    """``form`` if it is an attention form dart exports, else one sentence."""
    if form not in ATTENTION_FORMS:
        raise InputError(f"unknown attention form '{form}': use {' or '.join(ATTENTION_FORMS)}.")
    return form


@dataclass
class StageMetadata:
    """The facts about one exported stage that a runtime must agree with."""

    stage: str
    imgsz: int
    fingerprint: str
    dart_version: str
    backbone: str = "sam3"
    prune: dict[str, Any] = field(default_factory=lambda: PruneSpec().to_dict())
    num_blocks: int = 0  # blocks of the full (unpruned) backbone; precision specs index these
    max_classes: int | None = None  # encdec only
    dynamic_classes: bool = False
    masks: bool = False
    attn: str = "eager"
    prompt_mode: str = "meta"  # encdec: text + geometry token (meta) or text only (dart); older files are meta
    text_length: int = 32
    prompt_tokens: int = 0  # encdec: width G of the prompt_tokens input (exemplar boxes + 1); 0: no such input
    hidden_size: int = 256
    checkpoint: str = ""
    opset: int = 17
    precision: str = "fp32"  # engines: fp16 when built with --fp16
    fp32_layers: list[str] = field(default_factory=list)  # engines: layer patterns kept in FP32

    # ------------------------------------------------------------------------------------------- encoding
    def to_props(self) -> dict[str, str]:
        """Flat ``{key: string}`` pairs for ONNX ``metadata_props``."""
        return {PREFIX + k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_props(cls, props: dict[str, str], source: str | Path = "") -> StageMetadata:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, raw in props.items():
            if not key.startswith(PREFIX) or key[len(PREFIX):] not in known:
                continue
            try:
                values[key[len(PREFIX):]] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise CheckpointError(f"{source} has unreadable dart metadata ({key}); export it again.") from exc
        missing = {"stage", "imgsz", "fingerprint", "dart_version"} - set(values)
        if missing:
            raise CheckpointError(
                f"{source} carries no dart metadata ({sorted(missing)[0]} is missing), so dart cannot check what it "
                "was built for; export it with `dart export`."
            )
        if values["stage"] not in STAGES:
            raise CheckpointError(f"{source} is a '{values['stage']}' stage; dart knows {', '.join(STAGES)}.")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def prune_spec(self) -> PruneSpec:
        return PruneSpec.from_dict(self.prune)

    def describe(self) -> str:
        parts = [f"{self.stage}", f"{self.imgsz}px", f"checkpoint {self.fingerprint}"]
        if self.stage == "backbone":
            parts.append(f"pruning {self.prune_spec}")
        else:
            parts.append(f"{self.max_classes} classes" + (" (dynamic)" if self.dynamic_classes else " (fixed)"))
            if self.prompt_mode != "meta":
                parts.append(f"prompt mode {self.prompt_mode}")
        return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- files
def sidecar_path(engine: str | Path) -> Path:
    """Where an engine's metadata lives: ``X.engine`` -> ``X.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def write_onnx_metadata(model: Any, meta: StageMetadata) -> None:
    """Set (replace) the dart keys of an ``onnx.ModelProto``'s ``metadata_props``."""
    props = meta.to_props()
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in kept:
        model.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def read_onnx_metadata(path: str | Path) -> StageMetadata:
    """Read the metadata of an ONNX file without loading its weights."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX file '{path}' does not exist.")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise CheckpointError(f"'{path}' is not a readable ONNX file ({type(exc).__name__}); export it again with "
                              "`dart export`.") from exc
    return StageMetadata.from_props({p.key: p.value for p in model.metadata_props}, path)


def write_engine_metadata(engine: str | Path, meta: StageMetadata) -> Path:
    from dart.io import write_json

    target = sidecar_path(engine)
    write_json(target, meta.to_dict())
    return target


def read_engine_metadata(engine: str | Path) -> StageMetadata:
    path = sidecar_path(engine)
    if not path.is_file():
        raise InputError(
            f"engine '{engine}' has no metadata file '{path.name}' beside it, so dart cannot check what it was built "
            "for; build it with `dart build` from a dart ONNX export."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"engine metadata '{path}' is unreadable ({exc}); build the engine again.") from exc
    if not isinstance(data, dict):
        raise InputError(f"engine metadata '{path}' is not a JSON object; build the engine again.")
    return StageMetadata.from_props({PREFIX + k: json.dumps(v) for k, v in data.items()}, path)


def read_metadata(path: str | Path) -> StageMetadata:
    """Metadata of an ONNX file (``.onnx``) or an engine (anything else: read from its JSON sidecar)."""
    return read_onnx_metadata(path) if Path(path).suffix.lower() == ".onnx" else read_engine_metadata(path)


# ---------------------------------------------------------------------------------------------- checks
def check_stage(meta: StageMetadata, stage: str, source: str | Path) -> None:
    if meta.stage != stage:
        raise InputError(f"'{source}' holds the {meta.stage} stage, but the {stage} stage was expected there.")


def check_pair(backbone: StageMetadata, encdec: StageMetadata) -> None:
    """The two stages must come from the same checkpoint and image size."""
    if backbone.imgsz != encdec.imgsz:
        raise InputError(
            f"the backbone was exported at imgsz {backbone.imgsz} but the encoder-decoder at imgsz {encdec.imgsz}; "
            "export both at the same size."
        )
    if backbone.fingerprint != encdec.fingerprint:
        raise InputError(
            f"the backbone comes from checkpoint {backbone.fingerprint} but the encoder-decoder from "
            f"{encdec.fingerprint}; export both from the same checkpoint."
        )
    if backbone.hidden_size != encdec.hidden_size:
        raise InputError(
            f"the backbone outputs {backbone.hidden_size} channels but the encoder-decoder takes {encdec.hidden_size}."
        )


def check_expected(meta: StageMetadata, source: str | Path, *, imgsz: int | None = None,
                   prune: PruneSpec | None = None, fingerprint: str | None = None,
                   prompt_mode: str | None = None) -> None:
    """Refuse a stage built for other settings than the ones asked for (``None``: not asked)."""
    if prompt_mode is not None and meta.stage == "encdec" and meta.prompt_mode != prompt_mode:
        raise InputError(
            f"'{source}' was exported with --prompt-mode {meta.prompt_mode}, not {prompt_mode}; pass --prompt-mode "
            f"{meta.prompt_mode} or export the encoder-decoder again."
        )
    if imgsz is not None and meta.imgsz != imgsz:
        raise InputError(
            f"'{source}' was built for imgsz {meta.imgsz}, not imgsz {imgsz}; pass --imgsz {meta.imgsz} or export "
            f"and build it again at {imgsz}."
        )
    if prune is not None and meta.stage == "backbone" and meta.prune_spec != prune:
        raise InputError(
            f"'{source}' was built with pruning '{meta.prune_spec}', not '{prune}'; use matching --skip-blocks/"
            "--mask-blocks or export the backbone again."
        )
    if fingerprint is not None and meta.fingerprint != fingerprint:
        raise InputError(
            f"'{source}' was built from checkpoint {meta.fingerprint}, but the checkpoint given is {fingerprint}; "
            "use the checkpoint it was exported from."
        )
