"""Option definitions shared by the subcommands (one place for each flag's name, default and help)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dart.models.loading import DEFAULT_CHECKPOINT
from dart.models.sam3 import DEFAULT_IMGSZ

MODEL = "Model"
DETECTION = "Detection"
SPEED = "Precision and speed"

Checkpoint = Annotated[str, typer.Option(
    "--checkpoint", "-m", rich_help_panel=MODEL,
    help="SAM3 weights: a hub repo id, a transformers folder, a .safetensors file or Meta's sam3.pt.")]
Tokenizer = Annotated[Optional[str], typer.Option(
    "--tokenizer", rich_help_panel=MODEL,
    help="Tokenizer folder, hub id or CLIP's bpe_simple_vocab_16e6.txt.gz, when the checkpoint has none beside it "
         "(default: facebook/sam3's; offline: open-clip-torch's vocabulary if installed).")]
Classes = Annotated[Optional[list[str]], typer.Option(
    "--classes", "-c", rich_help_panel=DETECTION,
    help="Class names to detect (repeat the flag or separate with commas), e.g. -c person -c car.")]
Exemplars = Annotated[Optional[list[str]], typer.Option(
    "--exemplar", "-e", rich_help_panel=DETECTION,
    help="A class given by example boxes: [IMAGE:]x1,y1,x2,y2[+BOX][-BOX]=NAME[|TEXT] (repeatable; '+' adds a "
         "box, '-' a negative one; without IMAGE the boxes are on each detected image, in a video on the first "
         "frame), e.g. -e ref.jpg:120,40,180,90=widget. Adds to --classes, or is the only class list.")]
ClassesFile = Annotated[Optional[Path], typer.Option(
    "--classes-file", rich_help_panel=DETECTION, help="Text file with one class name per line.")]
TextCachePath = Annotated[Optional[Path], typer.Option(
    "--text-cache", rich_help_panel=MODEL,
    help="Cache file for text features (.safetensors): later runs skip the text encoder for known classes. With "
         "--engines DIR and no --text-cache, DIR/text.safetensors is used if it exists.")]
Conf = Annotated[float, typer.Option(
    "--conf", min=0.0, max=1.0, rich_help_panel=DETECTION, help="Confidence threshold (score = query x presence).")]
Nms = Annotated[float, typer.Option(
    "--nms", min=0.0, max=1.0, rich_help_panel=DETECTION, help="IoU threshold of the per-class NMS.")]
ClassConf = Annotated[Optional[str], typer.Option(
    "--class-conf", rich_help_panel=DETECTION,
    help="Thresholds for some classes, overriding --conf for them: 'person=0.5,car=0.35'.")]
Tile = Annotated[Optional[int], typer.Option(
    "--tile", min=64, rich_help_panel=DETECTION,
    help="Also detect in overlapping tiles of this many pixels and merge (small objects in large images). "
         "Default: off.")]
TileOverlap = Annotated[float, typer.Option(
    "--tile-overlap", min=0.0, max=0.9, rich_help_panel=DETECTION,
    help="With --tile: share of a tile its neighbours overlap.")]
AgnosticNms = Annotated[Optional[float], typer.Option(
    "--class-agnostic-nms", min=0.0, max=1.0, rich_help_panel=DETECTION,
    help="Also suppress overlapping boxes across classes at this IoU (e.g. car/truck/van). Off by default.")]
MaxDet = Annotated[int, typer.Option("--max-det", min=1, rich_help_panel=DETECTION,
                                     help="Keep at most this many detections per image.")]
Masks = Annotated[bool, typer.Option("--masks/--no-masks", rich_help_panel=DETECTION,
                                     help="Also predict instance masks (drawn, and saved as RLE in the JSON).")]
Coco = Annotated[bool, typer.Option("--coco", rich_help_panel=DETECTION, help="Detect the 80 COCO class names.")]
SkipBlocks = Annotated[Optional[str], typer.Option(
    "--skip-blocks", rich_help_panel=MODEL, help="Remove these ViT blocks from the backbone, e.g. 5,10,12.")]
MaskBlocks = Annotated[Optional[str], typer.Option(
    "--mask-blocks", rich_help_panel=MODEL,
    help="Skip the attention or MLP branch of these blocks, e.g. 25:attn,28:mlp.")]
PruneSpecFile = Annotated[Optional[Path], typer.Option(
    "--prune-spec", rich_help_panel=MODEL,
    help="YAML/JSON prune spec (skip_blocks, mask_blocks), e.g. from `dart prune search`.")]
Backbone = Annotated[Optional[str], typer.Option(
    "--backbone", rich_help_panel=MODEL,
    help="Image backbone from `dart plugins` (dart.backbones): sam3 (default), or a student such as repvit_m2_3 "
         "with --student-weights; default: sam3, or the student recorded in --student-weights.")]
StudentWeights = Annotated[Optional[Path], typer.Option(
    "--student-weights", rich_help_panel=MODEL,
    help="Student backbone weights (.safetensors) trained with `dart distill --phase adapter`.")]
BackendName = Annotated[str, typer.Option(
    "--backend", rich_help_panel=SPEED,
    help="torch (PyTorch), onnxruntime (.onnx files from `dart export`) or tensorrt (.engine files from `dart build`); "
         "auto: torch, or what the --engines files are.")]
Engines = Annotated[Optional[Path], typer.Option(
    "--engines", rich_help_panel=SPEED,
    help="Folder with backbone.onnx + encdec.onnx (onnxruntime) or backbone.engine + encdec.engine (tensorrt).")]
BackboneEngine = Annotated[Optional[Path], typer.Option(
    "--backbone-engine", rich_help_panel=SPEED, help="Backbone .onnx/.engine file (instead of --engines).")]
EncdecEngine = Annotated[Optional[Path], typer.Option(
    "--encdec-engine", rich_help_panel=SPEED, help="Encoder-decoder .onnx/.engine file (instead of --engines).")]
Device = Annotated[str, typer.Option("--device", rich_help_panel=SPEED, help="auto, cpu, cuda or cuda:N.")]
Precision = Annotated[str, typer.Option(
    "--precision", rich_help_panel=SPEED, envvar="DART_PRECISION",
    help="auto (bf16 on a GPU or on a CPU that computes bf16 natively, measured; fp32 otherwise), fp32, fp16 (CUDA) "
         "or bf16 for the backbone and encoder-decoder (the text encoder stays fp32).")]
Compile = Annotated[Optional[str], typer.Option(
    "--compile", rich_help_panel=SPEED,
    help="torch.compile the stages with this mode: default, reduce-overhead (CUDA graphs) or max-autotune. The "
         "class count is padded to 1, 2, 4, 8 or 16, so a new class list does not recompile. Off by default.")]
Imgsz = Annotated[int, typer.Option("--imgsz", rich_help_panel=SPEED,
                                    help="Square input size; a multiple of 14 (1008 is SAM3's native size).")]
RunImgsz = Annotated[Optional[int], typer.Option(
    "--imgsz", rich_help_panel=SPEED, show_default=False,
    help="Square input size, a multiple of 14 (default: 1008; with engines: the size they were exported for).")]
MaxClasses = Annotated[int, typer.Option(
    "--max-classes", min=1, rich_help_panel=SPEED,
    help="Classes per encoder-decoder batch; more classes are processed in chunks.")]

PromptMode = Annotated[Optional[str], typer.Option(
    "--prompt-mode", rich_help_panel=MODEL, show_default=False,
    help="meta (default; with engines: what they were exported with): each class prompt is its text tokens plus the "
         "geometry encoder's token, as SAM3 computes it; dart: text tokens only, as the DART research code.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite",
    help="Replace outputs that already exist (results of an earlier run). Without it such a run is refused before "
         "any work; inputs are never overwritten either way.")]
Threads = Annotated[Optional[int], typer.Option(
    "--threads", min=1, envvar="DART_THREADS", rich_help_panel=SPEED, show_default=False,
    help="CPU threads for PyTorch, OpenCV and onnxruntime (default: the CPUs this process may use). On a machine "
         "another program keeps busy, fewer (even 1) is much faster.")]
RAY = "Scale-out on Ray"
RayAddress = Annotated[Optional[str], typer.Option(
    "--ray-address", envvar="RAY_ADDRESS", rich_help_panel=RAY, show_default=False,
    help="With --ray: the Ray cluster to join (e.g. ray://head:10001; also $RAY_ADDRESS); default: a local Ray "
         "started for this run.")]

DEFAULTS = {
    "checkpoint": DEFAULT_CHECKPOINT,
    "conf": 0.3,
    "nms": 0.7,
    "max_det": 300,
    "device": "auto",
    "precision": "auto",
    "imgsz": DEFAULT_IMGSZ,
    "max_classes": 16,
    "backend": "auto",
    "prompt_mode": "meta",  # what --prompt-mode means when it is not given (engines: their own)
}
