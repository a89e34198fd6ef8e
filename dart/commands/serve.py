"""``dart serve``: an HTTP API (FastAPI on uvicorn) around one Detector, with the model options of ``dart detect``."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer
from rich.console import Console

from dart.commands import options as opt

D = opt.DEFAULTS
SERVE = "Serving"
API_KEY_ENV = "DART_API_KEY"


def serve(
    classes: opt.Classes = None,
    classes_file: opt.ClassesFile = None,
    coco: opt.Coco = False,
    exemplar: opt.Exemplars = None,
    host: Annotated[str, typer.Option("--host", rich_help_panel=SERVE,
                                      help="Address to listen on (127.0.0.1: this machine only; 0.0.0.0: every "
                                           "network it is on).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, rich_help_panel=SERVE, help="TCP port.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", rich_help_panel=SERVE, envvar=API_KEY_ENV,
        help=f"Require this key (X-API-Key header or Authorization: Bearer); also ${API_KEY_ENV}.")] = None,
    cors_origin: Annotated[Optional[list[str]], typer.Option(
        "--cors-origin", rich_help_panel=SERVE, help="Allow browser pages from this origin (repeatable; CORS is "
                                                     "off without it).")] = None,
    allow_urls: Annotated[bool, typer.Option(
        "--allow-urls", rich_help_panel=SERVE, help="Let clients send an image URL for the server to fetch (off: the "
                                                    "server never makes requests of its own).")] = False,
    max_batch: Annotated[int, typer.Option("--max-batch", min=1, rich_help_panel=SERVE,
                                           help="Most requests batched through one backbone call.")] = 4,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0, rich_help_panel=SERVE,
                                               help="How long the first request waits for others to batch with.")] = 5.0,
    queue_size: Annotated[int, typer.Option("--queue-size", min=1, rich_help_panel=SERVE,
                                            help="Requests waiting at most; more get 503 with Retry-After.")] = 64,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", min=0.001, rich_help_panel=SERVE,
                                                 help="Largest upload accepted (413 above).")] = 20.0,
    max_pixels: Annotated[int, typer.Option("--max-pixels", min=1, rich_help_panel=SERVE,
                                            help="Largest image accepted, in pixels (413 above).")] = 40_000_000,
    conf: opt.Conf = D["conf"],
    nms: opt.Nms = D["nms"],
    masks: opt.Masks = False,
    checkpoint: opt.Checkpoint = D["checkpoint"],
    tokenizer: opt.Tokenizer = None,
    skip_blocks: opt.SkipBlocks = None,
    mask_blocks: opt.MaskBlocks = None,
    prune_spec: opt.PruneSpecFile = None,
    backbone: opt.Backbone = None,
    student_weights: opt.StudentWeights = None,
    prompt_mode: opt.PromptMode = None,
    text_cache: opt.TextCachePath = None,
    device: opt.Device = D["device"],
    precision: opt.Precision = D["precision"],
    imgsz: opt.RunImgsz = None,
    max_classes: opt.MaxClasses = D["max_classes"],
    backend: opt.BackendName = D["backend"],
    engines: opt.Engines = None,
    backbone_engine: opt.BackboneEngine = None,
    encdec_engine: opt.EncdecEngine = None,
    threads: opt.Threads = None,
    ray: Annotated[bool, typer.Option(
        "--ray", rich_help_panel=opt.RAY, help="Serve as a Ray Serve deployment of --replicas copies (one per GPU, or "
                                               "CPU replicas) behind Ray's HTTP proxy; needs the ray extra.")] = False,
    ray_address: opt.RayAddress = None,
    replicas: Annotated[Optional[int], typer.Option(
        "--replicas", min=1, rich_help_panel=opt.RAY, show_default=False,
        help="With --ray: copies of the detector serving at once (default: one per GPU of the cluster; on CPUs, "
             "one).")] = None,
) -> None:
    """Serve the detector over HTTP: POST /v1/detect (an image, classes) -> the JSON `dart detect` writes.

    Example: [bold]dart serve -c person car --port 8000[/]  then
    [bold]curl -F image=@street.jpg -F classes=person,car http://127.0.0.1:8000/v1/detect[/]

    On every GPU of a Ray cluster: [bold]dart serve -c person car --ray --device cuda[/]
    """
    from dart.classes import exemplar_images, resolve_classes
    from dart.errors import DependencyError, InputError
    from dart.io import Outputs
    from dart.setup import setup_from_options

    try:
        import uvicorn

        from dart.serve import ServeConfig, create_app
    except ImportError as exc:
        raise DependencyError(f"dart serve needs FastAPI and uvicorn ({exc.name} is missing): "
                              "pip install 'dart-detect[serve]'.") from exc
    console = Console()
    given = bool(classes or classes_file or coco or exemplar)
    names = resolve_classes(classes, classes_file, coco, exemplar) if given else []
    setup = setup_from_options(locals(), validate=False)  # the files first: their mistakes need no torch to find
    plan = Outputs()
    plan.input(classes_file, "classes file")
    plan.inputs_from(exemplar_images(names), "exemplar image")
    setup.register_inputs(plan)
    setup.plan_text_cache(plan)
    if (ray_address or replicas) and not ray:
        raise InputError(f"{'--ray-address' if ray_address else '--replicas'} is for --ray: add --ray.")
    setup.validate(None)
    config = ServeConfig(classes=list(names), conf=conf, nms=nms, masks=masks, max_batch=max_batch,
                         max_wait_ms=max_wait_ms, queue_size=queue_size, max_upload_mb=max_upload_mb,
                         max_pixels=max_pixels, api_key=api_key or None, cors_origins=list(cors_origin or []),
                         allow_urls=allow_urls)
    exposed = host not in ("127.0.0.1", "localhost", "::1")
    if exposed and config.api_key is None:
        console.print(f"[yellow]warning:[/] listening on {host} without --api-key: anyone who can reach this "
                      "machine can use the model.", highlight=False)
    if ray:
        _serve_on_ray(console, setup, list(names), config, host=host, port=port, address=ray_address,
                      replicas=replicas, threads=threads)
        return
    from dart.backends.base import set_threads

    set_threads(threads)
    if not setup.uses_engines:
        console.print(f"loading SAM3 from [bold]{checkpoint}[/] ...", highlight=False)
    detector = setup.build_detector(names or None, conf=conf, nms=nms, masks=masks)
    app = create_app(detector, config)
    console.print(f"serving on [bold]http://{host}:{port}[/] (API docs at /docs) - Ctrl-C stops", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level=os.environ.get("DART_SERVE_LOG", "warning"))


def _serve_on_ray(console: Console, setup, names: list[str], config, *, host: str, port: int, address: str | None,
                  replicas: int | None, threads: int | None) -> None:
    from dart.serve.ray_cluster import cluster_resources, ray_started, stopped_as_ctrl_c
    from dart.serve.ray_serve import ray_application, serve_on_ray, stop_serving

    started = ray_started(address)
    with stopped_as_ctrl_c():  # installed after Ray's own: a SIGTERM takes the replicas (and this Ray) down
        try:
            count, gpus, cpus, _ = cluster_resources(setup, replicas, threads)
            app = ray_application(setup, names, config, replicas=count, gpus=gpus, cpus=cpus, threads=threads)
            console.print(f"starting {count} replica{'s' if count > 1 else ''} on Ray, then serving on "
                          f"[bold]http://{host}:{port}[/] (API docs at /docs) - Ctrl-C stops", highlight=False)
            serve_on_ray(app, host=host, port=port, blocking=True)
        except KeyboardInterrupt:
            pass
        finally:
            stop_serving(started)
