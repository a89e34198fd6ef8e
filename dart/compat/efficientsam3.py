"""EfficientSAM3 stage-1 checkpoints (``efficient_sam3_repvit_l.pt`` and the like), read as they are.

Such a file is a whole SAM3 checkpoint in Meta's layout in which SAM3's ViT is replaced by a small student trunk
and a projection head that make the ViT's output, ``[B, 1024, S/14, S/14]``; SAM3's own FPN neck turns that into
the three levels, and the neck, encoder-decoder, text encoder and scoring weights of the file are the ones
fine-tuned with the student. Layout (facts from the public module definitions, names only):

- trunk: ``detector.backbone.vision_backbone.trunk.model.backbone.model.<the trunk's original layout>``;
- head: ``detector.backbone.vision_backbone.trunk.model.head.{0,1,3}``: a 1x1 conv without bias to 1024
  channels, BatchNorm, GELU (index 2, no weights), a 3x3 conv; then a bilinear resize to the ViT's grid;
- everything else: Meta's ``sam3.pt`` names (:mod:`dart.models.meta_keymap`).

dart runs the trunk as the matching timm network; its original keys are renamed by an explicit map and loaded
strictly (:data:`TRUNKS`). The trunk reads SAM3's pixels as they are (mean/std 0.5), as in EfficientSAM3.

Supported trunks: RepViT (M0.9, M1.1, M2.3), TinyViT (5M, 11M, 21M) and EfficientViT (B0, B1, B2), the family
found from the keys and the size from the shapes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from dart.errors import CheckpointError

PREFIX = "backbone.vision_backbone.trunk.model."
TRUNK_PREFIX = PREFIX + "backbone.model."
HEAD_PREFIX = PREFIX + "head."
DETECTOR = "detector."
VIT_CHANNELS = 1024


def strip_detector(key: str) -> str:
    return key[len(DETECTOR):] if key.startswith(DETECTOR) else key


def is_efficientsam3(state: Mapping[str, object]) -> bool:
    """Whether a Meta-layout state dict holds an EfficientSAM3 student trunk instead of SAM3's ViT."""
    return any(strip_detector(key).startswith(TRUNK_PREFIX) for key in state)


# ------------------------------------------------------------------------------------------- trunks
@dataclass(frozen=True)
class TrunkSpec:
    """One EfficientSAM3 trunk: the timm network it is, a key its original layout always has, the key map."""

    name: str  # the dart.backbones name
    timm_name: str
    mark: str  # a key only this family's original layout has
    rename: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
    follow_original: Callable[[nn.Module], None] | None = None  # make timm's network compute what the original does


CLASSIFIERS = {"RepViT": ("classifier.", "distill_head."), "TinyViT": ("head.", "norm_head."), "EfficientViT": ()}


def _renamed(trunk: dict[str, torch.Tensor], rename_key: Callable[[str], str | None], family: str
             ) -> dict[str, torch.Tensor]:
    """``trunk`` under timm's names; the family's ImageNet classifier (:data:`CLASSIFIERS`, which older
    EfficientSAM3 files may hold and nothing runs) is skipped by name, any other key outside the map refused."""
    out, unknown = {}, []
    for key, tensor in trunk.items():
        if key.startswith(CLASSIFIERS[family]):
            continue
        new = rename_key(key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = tensor
    if unknown:
        raise CheckpointError(f"the EfficientSAM3 {family} trunk has {len(unknown)} keys outside {family}'s layout "
                              f"({', '.join(unknown[:3])}).")
    return out


def _repvit_rename(trunk: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """RepViT's original layout (one flat ``features`` list) to timm's (``stem``, ``stages.i.{downsample,blocks}``).

    The original list is the stem, then every block in order; a stage that starts with a downsample holds two of
    them: the block before (timm's ``downsample.pre_block``) and the stride-2 block (timm's ``spatial_downsample``,
    ``channel_downsample`` and ``ffn``). The positions come from timm's stage structure, so the map is exact for
    every RepViT size."""
    places: dict[int, tuple[str, str]] = {0: ("stem", "stem")}
    index = 1
    for s, stage in enumerate(model.stages):
        if not isinstance(stage.downsample, nn.Identity):
            places[index] = (f"stages.{s}.downsample.pre_block", "block")
            places[index + 1] = (f"stages.{s}.downsample", "downsample")
            index += 2
        for b in range(len(stage.blocks)):
            places[index] = (f"stages.{s}.blocks.{b}", "block")
            index += 1
    parts = {
        "stem": (("0.", "conv1."), ("2.", "conv2.")),
        "block": (("token_mixer.0.", "token_mixer."), ("token_mixer.1.", "se."),
                  ("channel_mixer.m.0.", "channel_mixer.conv1."), ("channel_mixer.m.2.", "channel_mixer.conv2.")),
        "downsample": (("token_mixer.0.", "spatial_downsample."), ("token_mixer.1.", "se."),
                       ("token_mixer.2.", "channel_downsample."), ("channel_mixer.m.0.", "ffn.conv1."),
                       ("channel_mixer.m.2.", "ffn.conv2.")),
    }

    def rename_key(key: str) -> str | None:
        match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
        place = places.get(int(match.group(1))) if match else None
        if place is None:
            return None
        prefix, kind = place
        for old, replacement in parts[kind]:
            if match.group(2).startswith(old):
                return f"{prefix}.{replacement}{match.group(2)[len(old):]}"
        return None

    return _renamed(trunk, rename_key, "RepViT")


def _tiny_vit_rename(trunk: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """TinyViT's original layout to timm's: ``patch_embed.seq.{0,2}`` -> ``patch_embed.conv{1,2}``, ``layers.i`` ->
    ``stages.i``, the downsample that ends original layer ``i`` -> the one that starts timm's stage ``i + 1``,
    and each Conv2d_BN's ``c`` -> ``conv``."""

    def rename_key(key: str) -> str | None:
        for old, new in (("patch_embed.seq.0.", "patch_embed.conv1."), ("patch_embed.seq.2.", "patch_embed.conv2.")):
            if key.startswith(old):
                key = new + key[len(old):]
                break
        else:
            down = re.fullmatch(r"layers\.(\d+)\.downsample\.(.+)", key)
            if down:
                key = f"stages.{int(down.group(1)) + 1}.downsample.{down.group(2)}"
            elif key.startswith("layers."):
                key = "stages." + key[len("layers."):]
            else:
                return None
        return re.sub(r"\.c\.(weight|bias)$", r".conv.\1", key)

    return _renamed(trunk, rename_key, "TinyViT")


ORIGINAL_LITEMLA_EPS = 1e-15  # the original EfficientViT's linear-attention normaliser eps (timm's default: 1e-5)


def _efficientvit_follow_original(model: nn.Module) -> None:
    """timm's LiteMLA divides by ``sum + 1e-5``, the original by ``sum + 1e-15``: set the original's, so the trunk
    computes what EfficientSAM3 trained (the difference is about 0.5 % of the features on random weights)."""
    for module in model.modules():
        if type(module).__name__ == "LiteMLA" and hasattr(module, "eps"):
            module.eps = ORIGINAL_LITEMLA_EPS


def _efficientvit_rename(trunk: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """EfficientViT's (MIT) original layout to timm's: ``input_stem.op_list.0`` -> ``stem.in_conv``,
    ``input_stem.op_list.i`` -> ``stem.res{i-1}``, ``stages.s.op_list.j`` -> ``stages.s.blocks.j``."""

    def rename_key(key: str) -> str | None:
        stem = re.fullmatch(r"input_stem\.op_list\.(\d+)\.(.+)", key)
        if stem:
            index = int(stem.group(1))
            return f"stem.{'in_conv' if index == 0 else f'res{index - 1}'}.{stem.group(2)}"
        block = re.fullmatch(r"stages\.(\d+)\.op_list\.(\d+)\.(.+)", key)
        return f"stages.{block.group(1)}.blocks.{block.group(2)}.{block.group(3)}" if block else None

    return _renamed(trunk, rename_key, "EfficientViT")


_FAMILIES = (  # (dart name prefix, the original layout's mark, its map, timm fixes, {size: timm network})
    ("repvit", "features.0.0.c.weight", _repvit_rename, None,
     {"m2_3": "repvit_m2_3", "m1_1": "repvit_m1_1", "m0_9": "repvit_m0_9"}),
    ("tiny_vit", "patch_embed.seq.0.c.weight", _tiny_vit_rename, None,
     {"11m": "tiny_vit_11m_224", "5m": "tiny_vit_5m_224", "21m": "tiny_vit_21m_224"}),
    ("efficientvit", "input_stem.op_list.0.conv.weight", _efficientvit_rename, _efficientvit_follow_original,
     {"b1": "efficientvit_b1", "b0": "efficientvit_b0", "b2": "efficientvit_b2"}),
)
TRUNKS: dict[str, TrunkSpec] = {
    f"efficientsam3_{family}_{size}": TrunkSpec(f"efficientsam3_{family}_{size}", timm_name, mark, rename, follow)
    for family, mark, rename, follow, sizes in _FAMILIES for size, timm_name in sizes.items()
}


def find_trunk(trunk: dict[str, torch.Tensor], source: str) -> TrunkSpec:
    """The :class:`TrunkSpec` whose timm network ``trunk`` (original-layout keys, without the prefix) fits exactly
    once renamed: family from its keys, size from its shapes (each candidate built on the meta device)."""
    from dart.models.loading import key_differences
    from dart.students.model import import_timm

    origin = {id(tensor): key for key, tensor in trunk.items()}
    closest: tuple[int, str] | None = None  # (keys that differ, why), of the size the file is nearest to
    for spec in (spec for spec in TRUNKS.values() if spec.mark in trunk):
        with torch.device("meta"):
            model = import_timm().create_model(spec.timm_name, pretrained=False, num_classes=0)
        try:
            renamed = spec.rename(trunk, model)
        except CheckpointError as exc:
            why = (len(trunk), str(exc).rstrip("."))
        else:
            mine = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}  # a classifier
            missing, unexpected, shaped = key_differences(mine, renamed)
            if not (missing or unexpected or shaped):
                return spec
            named = [origin.get(id(renamed[k]), k) for k in unexpected + shaped]  # as the file names them
            example = (f"{'unexpected' if unexpected else 'mis-shaped'} {named[0]}" if named
                       else f"no key for {spec.timm_name}'s {missing[0]}")
            why = (len(missing) + len(unexpected) + len(shaped),
                   f"its trunk is laid out like {spec.timm_name} but does not fit it ({len(missing)} missing, "
                   f"{len(unexpected)} unexpected, {len(shaped)} mis-shaped keys; e.g. {example}), nor any other "
                   "size dart knows")
        closest = min(closest, why) if closest else why
    if closest is not None:
        raise CheckpointError(f"'{source}': {closest[1]}.")
    raise CheckpointError(f"'{source}' holds an EfficientSAM3 student trunk of a kind dart does not know "
                          f"(first key: {next(iter(trunk), 'none')}).")


# ------------------------------------------------------------------------------------------- modules
class StudentEncoder(nn.Module):
    """``pixel_values [B, 3, S, S]`` -> the ViT's output ``[B, 1024, S/14, S/14]``: the trunk, the projection
    head (1x1 conv, BatchNorm, GELU, 3x3 conv) and a bilinear resize to the ViT grid."""

    def __init__(self, spec: TrunkSpec, patch_size: int = 14, channels: int = VIT_CHANNELS):
        """``channels``: the ViT width the head makes (1024 for SAM3; what the neck reads)."""
        super().__init__()
        from dart.students.model import import_timm

        self.trunk = import_timm().create_model(spec.timm_name, pretrained=False, num_classes=0)
        self.trunk.head = nn.Identity()  # only forward_features runs: no classifier (nor its norm) is held
        if spec.follow_original is not None:
            spec.follow_original(self.trunk)
        self.head = nn.Sequential(
            nn.Conv2d(int(self.trunk.num_features), channels, kernel_size=1, bias=False),  # the last stage's width
            nn.BatchNorm2d(channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )
        self.patch_size = patch_size

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        grid = (pixel_values.shape[-2] // self.patch_size, pixel_values.shape[-1] // self.patch_size)
        x = self.head(self.trunk.forward_features(pixel_values))
        if tuple(x.shape[-2:]) != grid:
            x = F.interpolate(x, size=grid, mode="bilinear", align_corners=False)
        return x


class EfficientSam3Backbone(nn.Module):
    """The backbone stage of an EfficientSAM3 model: :class:`StudentEncoder`, then SAM3's FPN neck (its first
    three levels, as :class:`dart.stages.BackboneStage` uses them) -> ``(4x, 2x, 1x)``."""

    def __init__(self, name: str, sam3: nn.Module):
        super().__init__()
        from dart.stages import FPN_LEVELS

        spec = TRUNKS[name]
        vit = sam3.config.vision_config.backbone_config
        self.encoder = StudentEncoder(spec, int(vit.patch_size), int(vit.hidden_size))
        self.fpn = nn.ModuleList(list(sam3.vision_encoder.neck.fpn_layers)[:FPN_LEVELS])
        self.dart_backbone_name = name

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        spatial = self.encoder(pixel_values)
        return tuple(level(spatial) for level in self.fpn)

    def load_original(self, trunk: dict[str, torch.Tensor], head: dict[str, torch.Tensor], source: str) -> None:
        """Load the trunk (original layout, renamed by the trunk's map) and the head, each strictly; a key that
        does not fit is named as the file names it."""
        from dart.models.loading import key_differences

        spec = TRUNKS[self.dart_backbone_name]
        origin = {id(tensor): TRUNK_PREFIX + key for key, tensor in trunk.items()}
        origin.update({id(tensor): HEAD_PREFIX + key for key, tensor in head.items()})
        parts = (("trunk", self.encoder.trunk, spec.rename(trunk, self.encoder.trunk)),
                 ("head", self.encoder.head, dict(head)))
        for what, module, state in parts:
            missing, unexpected, shaped = key_differences(module.state_dict(), state)
            named = lambda keys: [origin.get(id(state[k]), k) for k in keys]  # noqa: E731 - as in the file
            for kind, keys in (("unexpected", named(unexpected)), ("mis-shaped", named(shaped)),
                               ("missing", missing)):
                if keys:
                    raise CheckpointError(f"'{source}': the EfficientSAM3 {what} does not fit {spec.timm_name}: "
                                          f"{len(keys)} {kind} keys ({', '.join(keys[:3])}).")
            module.load_state_dict(state, strict=True)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                                                          dict[str, torch.Tensor]]:
    """``(trunk, head, rest)`` of an EfficientSAM3 state dict: the trunk's and head's keys without their prefix,
    and the rest as it was (Meta names, for :func:`dart.models.meta_keymap.convert_meta_state_dict`)."""
    trunk, head, rest = {}, {}, {}
    for key, tensor in state.items():
        name = strip_detector(key)
        if name.startswith(TRUNK_PREFIX):
            trunk[name[len(TRUNK_PREFIX):]] = tensor
        elif name.startswith(HEAD_PREFIX):
            head[name[len(HEAD_PREFIX):]] = tensor
        else:
            rest[key] = tensor
    return trunk, head, rest


# ------------------------------------------------------------------------------------------- loading
def load_efficientsam3(state: dict[str, torch.Tensor], source: str, config):
    """``(Sam3Model, EfficientSam3Backbone)`` from an EfficientSAM3 state dict (Meta layout, trunk and head
    included). The SAM3 model holds everything but the ViT (its config keeps no ViT blocks; the few ViT tensors
    that remain, never used, are zero); the backbone holds the trunk and head and shares the model's FPN neck.
    Every key is mapped explicitly and loaded strictly."""
    import copy

    from transformers import Sam3Model

    from dart.models.loading import unreadable_weights
    from dart.models.meta_keymap import MetaCheckpointError, convert_meta_state_dict

    trunk, head, rest = split_state(state)
    spec = find_trunk(trunk, source)
    try:
        converted = convert_meta_state_dict(rest, consume=True)
    except MetaCheckpointError as exc:
        raise CheckpointError(f"{source}: {exc}") from exc
    vit_keys = [k for k in converted if k.startswith("vision_encoder.backbone.")]
    if vit_keys:
        raise CheckpointError(f"'{source}' holds both an EfficientSAM3 trunk and SAM3 ViT weights ({vit_keys[0]}); "
                              "it is neither an EfficientSAM3 nor a SAM3 checkpoint.")
    config = copy.deepcopy(config)
    config.vision_config.backbone_config.num_hidden_layers = 0  # the student replaces every ViT block
    with unreadable_weights(source, "EfficientSAM3 checkpoint"):
        model, info = Sam3Model.from_pretrained(None, config=config, state_dict=converted, output_loading_info=True,
                                                dtype="float32")
    unused = {k for k in model.state_dict() if k.startswith("vision_encoder.backbone.")}
    missing = sorted(set(map(str, info.get("missing_keys") or ())) - unused)
    for kind, keys in (("missing", missing), ("unexpected", sorted(map(str, info.get("unexpected_keys") or ()))),
                       ("mis-shaped", sorted(str(k) for k in info.get("mismatched_keys") or ()))):
        if keys:
            raise CheckpointError(f"'{source}' does not fit SAM3 around an EfficientSAM3 trunk: {len(keys)} {kind} "
                                  f"keys ({', '.join(keys[:3])}).")
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in unused and tensor.is_floating_point():
                tensor.zero_()  # never run; zero so that the fingerprint is the file's alone
    backbone = EfficientSam3Backbone(spec.name, model)
    backbone.load_original(trunk, head, source)
    return model, backbone.eval()


class EfficientSam3Factory:
    """``factory(sam3, weights=None, pretrained=False)`` for the ``dart.backbones`` group: the trunk, head and
    ``sam3``'s FPN neck with random trunk and head (speed measurements: ``dart bench backbones``). Real
    EfficientSAM3 weights come with their own neck and encoder-decoder, so they load as ``--checkpoint``."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, sam3: nn.Module, *, weights=None, pretrained: bool = False) -> EfficientSam3Backbone:
        from dart.errors import InputError

        if weights is not None:
            raise InputError(f"{self.name}: an EfficientSAM3 checkpoint carries its own FPN neck and "
                             "encoder-decoder; pass it as --checkpoint FILE (no --backbone or --student-weights).")
        return EfficientSam3Backbone(self.name, sam3).eval()

    def __repr__(self) -> str:
        return f"EfficientSam3Factory({self.name!r} -> timm {TRUNKS[self.name].timm_name!r})"


# entry points of dart.backbones
repvit_m2_3 = EfficientSam3Factory("efficientsam3_repvit_m2_3")
repvit_m1_1 = EfficientSam3Factory("efficientsam3_repvit_m1_1")
repvit_m0_9 = EfficientSam3Factory("efficientsam3_repvit_m0_9")
tiny_vit_11m = EfficientSam3Factory("efficientsam3_tiny_vit_11m")
tiny_vit_5m = EfficientSam3Factory("efficientsam3_tiny_vit_5m")
tiny_vit_21m = EfficientSam3Factory("efficientsam3_tiny_vit_21m")
efficientvit_b1 = EfficientSam3Factory("efficientsam3_efficientvit_b1")
efficientvit_b0 = EfficientSam3Factory("efficientsam3_efficientvit_b0")
efficientvit_b2 = EfficientSam3Factory("efficientsam3_efficientvit_b2")
