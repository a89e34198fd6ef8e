"""A *setup*: everything that decides how a detector is built (weights, backbone, pruning, backend, image size).

Every model command (``detect``, ``video``, ``eval``, ``bench``) describes its detector as a :class:`Setup` from
its flags and builds it with :meth:`Setup.build_detector`: the one place that chooses between the PyTorch
backend (full, pruned, student or synthetic) and exported stages. ``dart eval coco --configs FILE`` and
``dart bench class-scaling --configs FILE`` compare several setups in one table. A configs file is YAML or JSON, either a
list of setups or a mapping with a ``setups`` list::

    setups:
      - name: full
      - name: pruned-16
        prune_spec: runs/prune/spec.yaml
      - name: repvit
        backbone: repvit_m2_3
        student_weights: repvit.safetensors
      - name: trt-fp16
        backend: tensorrt
        engines: engines/

Keys a setup leaves out take the value of the command's flags.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dart.errors import InputError
from dart.models.loading import DEFAULT_CHECKPOINT
from dart.models.sam3 import DEFAULT_IMGSZ, validate_imgsz
from dart.pruning.spec import PruneSpec, resolve_prune_spec

if TYPE_CHECKING:  # pragma: no cover
    from dart.detector import Detector
    from dart.io import Outputs

SAM3_BACKBONE = "sam3"
PATH_KEYS = ("checkpoint", "tokenizer", "student_weights", "prune_spec", "engines", "backbone_engine", "encdec_engine",
             "text_cache", "synthetic_config")
ENGINES_TEXT_CACHE = "text.safetensors"  # read from an engines folder when no text cache is named

_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "checkpoint": (str,), "tokenizer": (str,), "backbone": (str,), "student_weights": (str,),
    "skip_blocks": (str, list, int), "mask_blocks": (str, list), "prune_spec": (str,), "backend": (str,),
    "engines": (str,), "backbone_engine": (str,), "encdec_engine": (str,), "imgsz": (int,), "precision": (str,), "device": (str,), "compile": (str,),
    "max_classes": (int,), "prompt_mode": (str,), "text_cache": (str,), "synthetic": (bool,),
    "synthetic_config": (str,),
}


@dataclass
class Setup:
    """How to build one detector. ``describe()`` is what goes into result JSON files."""

    name: str = "default"
    checkpoint: str = DEFAULT_CHECKPOINT
    tokenizer: str | None = None
    backbone: str | None = None  # None / "sam3": SAM3's own ViT; otherwise a dart.backbones plugin (students)
    student_weights: str | None = None
    skip_blocks: str | list[int] | None = None
    mask_blocks: str | list[str] | None = None
    prune_spec: str | None = None
    backend: str = "auto"  # auto: torch, or the kind of the engine files when engines are given
    engines: str | None = None
    backbone_engine: str | None = None
    encdec_engine: str | None = None
    imgsz: int | None = None  # None: 1008 for PyTorch, the exported size for engines
    precision: str = "auto"  # auto: bf16 where the device computes it natively (measured), else fp32
    device: str = "auto"
    compile: str | None = None
    max_classes: int = 16
    prompt_mode: str | None = None  # meta (None: meta, or the engines' own): text + geometry token; dart: text only
    text_cache: str | None = None  # None with an engines folder: its text.safetensors when present
    synthetic: bool = False  # random weights (speed only, never accuracy)
    synthetic_config: str | None = None  # a Sam3Config JSON for synthetic weights (default: full-size SAM3)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in PATH_KEYS:
            value = getattr(self, key)
            if isinstance(value, Path):
                setattr(self, key, str(value))
        if self.backend in (None, ""):
            self.backend = "auto"

    # ----------------------------------------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Setup | None = None, where: str = "setup", *,
                  validate: bool = True) -> Setup:
        """A setup from a mapping; missing keys come from ``base``. Unknown keys and wrong types are sentences;
        ``validate=False`` leaves :meth:`validate` (which imports torch to resolve the device) to the caller."""
        if not isinstance(data, dict):
            raise InputError(f"{where} must be a mapping of setting: value, got {type(data).__name__}.")
        allowed = sorted(_TYPES)
        values: dict[str, Any] = {}
        for key, value in data.items():
            key = str(key).replace("-", "_")
            if isinstance(value, Path) and key in PATH_KEYS:
                value = str(value)
            if key not in _TYPES:
                raise InputError(f"{where}: unknown key '{key}'; allowed keys: {', '.join(allowed)}.")
            if value is not None and (not isinstance(value, _TYPES[key]) or
                                      (isinstance(value, bool) and bool not in _TYPES[key])):
                kinds = " or ".join(t.__name__ for t in _TYPES[key])
                raise InputError(f"{where}: '{key}' must be {kinds}, got {type(value).__name__} ({value!r}).")
            values[key] = value
        setup = replace(base or cls(), **values)
        if validate:
            setup.validate(where)
        return setup

    def validate(self, where: str | None = "setup") -> None:
        """Every check that needs no weights, so a bad value is reported before a model loads: image size, name,
        backend and the flags it conflicts with, device, precision, compile mode, and the prune spec against the
        checkpoint's config (when the config can be read without loading). Errors are prefixed with ``where``
        (a file / setup name)."""
        from dart.errors import DartError

        try:
            if self.imgsz is not None:
                validate_imgsz(self.imgsz)
            if not re.fullmatch(r"[\w.+=-]+", self.name):
                raise InputError(f"name '{self.name}' may only use letters, digits and . _ - + = (it names a folder).")
            from dart.prompts import check_prompt_mode

            if self.prompt_mode is not None:
                check_prompt_mode(self.prompt_mode)
            if not self.synthetic and not self.uses_engines:
                from dart.models.loading import check_checkpoint_named

                check_checkpoint_named(self.checkpoint)
            self._validate_backend()
            self._validate_speed()
            self._validate_prune()
        except DartError as exc:
            if where is None:
                raise
            raise type(exc)(f"{where}: {exc}") from exc

    def _validate_backend(self) -> None:
        from dart.plugins.registry import available

        known = [name for name, _, _ in available("dart.backends")]
        if self.backend != "auto" and self.backend not in known:
            raise InputError(f"unknown backend '{self.backend}': use {', '.join(['auto', *known])}.")
        files = [flag for flag, value in (("--engines", self.engines), ("--backbone-engine", self.backbone_engine),
                                          ("--encdec-engine", self.encdec_engine)) if value]
        if self.backend == "torch" and files:
            raise InputError(f"--backend torch runs the PyTorch model, but {files[0]} names exported stages; drop one "
                             "of the two (with --engines alone the backend follows the files).")

    def engine_kind(self) -> str:
        """The backend named, or the one for the engine files given (``tensorrt`` for ``.engine``; for ``.onnx``
        OpenVINO on a CPU where it is installed, else onnxruntime)."""
        from dart.backends.engine_backend import infer_engine_kind

        if self.backend not in ("auto", "torch"):
            return self.backend
        return infer_engine_kind(self.engines, self.backbone_engine, self.device)

    def _validate_engine_flags(self) -> None:
        kind = self.engine_kind()
        own_precision = kind == "openvino"  # OpenVINO takes a precision hint of its own (fp32, bf16, auto)
        torch_only = {"--precision": self.precision not in ("fp32", "auto") and not own_precision,
                      "--compile": self.compile is not None,
                      "--backbone": not self.uses_sam3_backbone, "--student-weights": self.student_weights is not None,
                      "--synthetic": self.synthetic}
        for flag, used in torch_only.items():
            if used:
                raise InputError(f"{flag} applies to the PyTorch backend; the {kind} stages were fixed when they were "
                                 "exported and built.")
        if kind == "openvino" and self.device not in ("auto", "cpu"):
            raise InputError(f"the openvino backend runs on the CPU; use --device cpu (or auto), not '{self.device}'.")
        from dart.backends.engine_backend import find_stage_files
        from dart.export.metadata import check_expected, read_metadata

        backbone, encdec = self.backbone_engine, self.encdec_engine
        if (backbone is None or encdec is None) and self.engines:
            found = find_stage_files(self.engines, kind)
            backbone, encdec = backbone or found[0], encdec or found[1]
        for path in (backbone, encdec):
            if path is not None and Path(path).is_file():  # a missing file is one sentence when the engines open
                check_expected(read_metadata(path), path, imgsz=self.imgsz, prune=self.prune() or None,
                               prompt_mode=self.prompt_mode)

    def _validate_speed(self) -> None:
        from dart.backends.base import COMPILE_MODES, PRECISION_CHOICES, resolve_device, resolve_precision

        if self.precision not in PRECISION_CHOICES:
            raise InputError(f"unknown precision '{self.precision}': use {', '.join(PRECISION_CHOICES)}.")
        if self.compile is not None and self.compile not in COMPILE_MODES:
            raise InputError(f"unknown compile mode '{self.compile}': use {', '.join(COMPILE_MODES)}.")
        if self.uses_engines:
            self._validate_engine_flags()
            return  # engines check the device when they open (onnxruntime providers, TensorRT's GPU)
        device = resolve_device(self.device)
        resolve_precision(self.precision, device)

    def _validate_prune(self) -> None:
        spec = self.prune()
        if not spec or self.synthetic or self.uses_engines or not self.uses_sam3_backbone:
            return
        from dart.models.loading import vit_blocks
        from dart.pruning.checkpoint import find_prune_file

        if find_prune_file(self.checkpoint) is not None:
            return  # a pruned checkpoint: its own spec applies first, checked when it loads
        blocks = vit_blocks(self.checkpoint)
        if blocks is not None:
            spec.validate(blocks)

    def prune(self) -> PruneSpec:
        skip = ",".join(map(str, self.skip_blocks)) if isinstance(self.skip_blocks, list) else self.skip_blocks
        mask = ",".join(map(str, self.mask_blocks)) if isinstance(self.mask_blocks, list) else self.mask_blocks
        return resolve_prune_spec(None if skip is None else str(skip), mask, self.prune_spec)

    @property
    def uses_engines(self) -> bool:
        return self.backend not in ("auto", "torch") or any((self.engines, self.backbone_engine, self.encdec_engine))

    @property
    def uses_sam3_backbone(self) -> bool:
        return self.backbone in (None, "", SAM3_BACKBONE)

    def register_inputs(self, plan: Outputs) -> None:
        """Tell an output plan what this setup reads, so no output of the run can be written over it."""
        plan.input(self.checkpoint, "checkpoint", contents=True)
        plan.input(self.tokenizer, "tokenizer", contents=True)
        plan.input(self.student_weights, "student weights")
        plan.input(self.prune_spec, "prune spec")
        plan.input(self.synthetic_config, "synthetic config")
        plan.input(self.engines, "engines folder", contents=True)
        plan.input(self.backbone_engine, "backbone engine")
        plan.input(self.encdec_engine, "encoder-decoder engine")

    def plan_text_cache(self, plan: Outputs) -> None:
        """The text cache grows when new class names are encoded: plan it as an output that is extended."""
        if self.text_cache:
            from dart.compat import is_torch_file

            if Path(self.text_cache).is_file() and is_torch_file(self.text_cache):
                plan.input(self.text_cache, "text cache")  # a foreign (DART) cache is read, never written
                return
            plan.file(self.text_cache, "--text-cache", existing="extend")

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description: only the meaningful keys, prune spec resolved, synthetic weights marked."""
        out = {k: v for k, v in asdict(self).items() if v not in (None, "", {}, []) and k != "extra"}
        out["prune"] = str(self.prune())
        for key in ("skip_blocks", "mask_blocks", "prune_spec"):
            out.pop(key, None)
        if self.synthetic:
            out["checkpoint"] = "synthetic (random weights: speed only)"
        else:
            out.pop("synthetic", None)
        return out

    def label(self) -> str:
        return f"{self.name} [synthetic weights]" if self.synthetic else self.name

    def engines_text_cache(self) -> str | None:
        """``text.safetensors`` in the engines folder, when no --text-cache is given and it is there: the text
        features that belong with those engines (as the TensorRT quick start writes them)."""
        if self.text_cache or not self.engines:
            return None
        path = Path(self.engines) / ENGINES_TEXT_CACHE
        return str(path) if path.is_file() else None

    # ---------------------------------------------------------------------------------------- building
    def build_detector(self, classes: list[str] | None = None, **detector_kwargs: Any) -> Detector:
        """Build the :class:`~dart.detector.Detector` this setup describes: the PyTorch backend with SAM3's ViT
        (full or pruned) or a student backbone, or exported stages on ``onnxruntime`` / ``tensorrt``.
        Synthetic setups get random weights and random text features (speed only)."""
        from dart.detector import Detector

        detector_kwargs.setdefault("max_classes_per_batch", self.max_classes)
        text_cache = self.text_cache or self.engines_text_cache()
        if text_cache and not self.synthetic:
            detector_kwargs.setdefault("text_cache", text_cache)
        if self.uses_engines:
            return self._engine_detector(classes, detector_kwargs)
        if not self.uses_sam3_backbone or self.student_weights:
            self._check_student()
        imgsz = self.imgsz or DEFAULT_IMGSZ
        if not self.synthetic:
            return Detector.from_pretrained(
                self.checkpoint, classes, device=self.device, precision=self.precision, imgsz=imgsz,
                compile=self.compile, tokenizer=self.tokenizer, prune=self.prune() or None, backbone=self.backbone,
                student_weights=self.student_weights, prompt_mode=self.prompt_mode or "meta", **detector_kwargs)
        from dart.bench.synthetic import synthetic_sam3

        detector = Detector.from_loaded(
            synthetic_sam3(self.synthetic_config, imgsz=imgsz), None, device=self.device,
            precision=self.precision, compile=self.compile, prune=self.prune() or None, backbone=self.backbone,
            student_weights=self.student_weights, prompt_mode=self.prompt_mode or "meta", **detector_kwargs)
        seed_random_text(detector, list(classes or []))
        if classes is not None:
            detector.set_classes(classes)
        return detector

    def _engine_detector(self, classes: list[str] | None, detector_kwargs: dict[str, Any]) -> Detector:
        """Exported stages: the kind comes from ``backend`` or the files; settings that only mean something for
        PyTorch are refused; ``imgsz`` and a prune spec, when set, must match what the stages were built for.
        The checkpoint only serves as the (lazily loaded) text encoder for names missing from the text cache."""
        from dart.detector import Detector

        kind = self.engine_kind()
        return Detector.from_engines(
            self.backbone_engine, self.encdec_engine, classes, engines=self.engines, backend=kind, device=self.device,
            checkpoint=self.checkpoint, tokenizer=self.tokenizer, imgsz=self.imgsz, prune=self.prune() or None,
            prompt_mode=self.prompt_mode, backend_options={"precision": self.precision} if kind == "openvino" else None,
            **detector_kwargs)

    def _check_student(self) -> None:
        if self.prune():
            raise InputError(f"setup '{self.name}': skip_blocks/mask_blocks prune SAM3's ViT, which a student "
                             "backbone replaces; give one or the other.")
        if self.student_weights is None and not self.synthetic:
            raise InputError(f"setup '{self.name}': backbone {self.backbone} needs student_weights (a student "
                             "trained with `dart distill --phase adapter`).")


OPTION_KEYS = ("checkpoint", "tokenizer", "backbone", "student_weights", "skip_blocks", "mask_blocks", "prune_spec",
               "backend", "engines", "backbone_engine", "encdec_engine", "imgsz", "precision", "device", "compile",
               "max_classes", "text_cache", "prompt_mode")


def setup_from_options(options: dict[str, Any], *, validate: bool = True) -> Setup:
    """The :class:`Setup` a command's model flags describe (flags the command lacks keep their defaults),
    validated before any weights load. ``validate=False`` leaves :meth:`Setup.validate` to the caller: a command
    checks its files first, which needs no torch, so a mistaken path is reported at once."""
    setup = Setup(**{key: options[key] for key in OPTION_KEYS if key in options})
    if validate:
        setup.validate(None)
    return setup


def seed_random_text(detector: Detector, names: list[str], seed: int = 0) -> None:
    """Fill the detector's text cache with fixed random text features for ``names`` (synthetic weights have no
    meaningful text encoder, and speed does not depend on the values)."""
    import torch

    from dart.classes import parse_vocabulary

    names = parse_vocabulary(names).prompts if names else []  # the cache is keyed by what the text encoder reads
    backend = detector.backend
    model = backend.loaded.model
    length = int(model.config.text_config.max_position_embeddings)
    width = int(model.config.detr_encoder_config.hidden_size)
    missing = detector.text_cache.missing(names)
    if not missing:
        return
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(len(missing), length, width, generator=generator)
    mask = torch.zeros(len(missing), length, dtype=torch.bool)
    mask[:, :4] = True  # a short prompt: start token, two words, end token
    detector.text_cache.add(missing, features, mask)


def configs_where(path: str | Path, index: int) -> str:
    """How errors name the ``index``-th (0-based) setup of a ``--configs`` file."""
    return f"{path}, setup {index + 1}"


def load_setups(path: str | Path, base: Setup, *, validate: bool = True) -> list[Setup]:
    """Read a ``--configs`` file: a list of setups (or ``{setups: [...]}``); names must be unique.
    ``validate=False``: as for :meth:`Setup.from_dict` (then validate each with :func:`configs_where`)."""
    from dart.io import read_yaml

    path = Path(path)
    data = read_yaml(path, "configs file")
    if isinstance(data, dict) and set(data) == {"setups"}:
        data = data["setups"]
    if not isinstance(data, list) or not data:
        raise InputError(f"configs file '{path}' must hold a non-empty list of setups (or a 'setups:' list).")
    setups = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and "name" not in item:
            item = {**item, "name": f"setup{i + 1}"}
        setups.append(Setup.from_dict(item, base, configs_where(path, i), validate=validate))
    names = [s.name for s in setups]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"configs file '{path}': setup name '{dupes[0]}' is used twice; names must be unique.")
    return setups


def setup_fields() -> list[str]:
    return [f.name for f in fields(Setup) if f.name != "extra"]
