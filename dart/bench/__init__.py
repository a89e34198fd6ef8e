"""Speed measurements (``dart bench``): medians after warm-up, CUDA-event stage timing on GPUs, the device and
versions recorded with every result, a rich table, a JSON file and a PNG plot.

- :mod:`dart.bench.class_scaling`: FPS and per-stage ms vs the number of classes;
- :mod:`dart.bench.timing`: CUDA-event and wall-clock stage timers;
- :mod:`dart.bench.environment`: device and versions;
- :mod:`dart.bench.plot`: OpenCV line and bar charts;
- :mod:`dart.bench.synthetic`: random-weight models for speed only.

``dart bench video`` and ``dart bench backbones`` call :func:`dart.video.pipeline.benchmark_video` and
:func:`dart.students.bench.benchmark_backbones` when those are installed.
"""
