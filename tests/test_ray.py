"""Scale-out on a local Ray instance (CPU, tiny model): ``dart detect --ray`` writes exactly the files of a local
run (also when it resumes one), a worker that cannot build its detector is one sentence, and ``dart serve``'s app
as a Ray Serve deployment of two replicas answers what a direct ``Detector`` call gives."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray tests need Ray (the ray extra, in dev)")
pytest.importorskip("ray.data", reason="the Ray tests need Ray Data (the ray extra, in dev)")

from dart.images import result_json  # noqa: E402
from dart.setup import Setup  # noqa: E402
from tests.conftest import image_folder, make_image  # noqa: E402
from tests.test_cli import detect_args, run  # noqa: E402
from tests.test_resume import files_of  # noqa: E402
from tests.tiny import TINY_IMGSZ  # noqa: E402

ARGS = ("-c", "person", "car", "--conf", "0.2", "--save-txt", "--save-coco", "--masks", "--precision", "fp32",
        "--threads", "1")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (2 CPUs); dart joins it instead of starting its own."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture()
def folder(tmp_path) -> Path:
    images = image_folder(tmp_path / "imgs", 6)
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    return images


def test_ray_labelling_writes_what_a_local_run_writes(local_ray, tmp_path, tiny_ckpt, folder):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", local)).exit_code == 2  # the broken image
    res = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", on_ray, "--ray", "--workers", "2"))
    assert res.exit_code == 2, res.output
    assert "1 of 7 images could not be read" in " ".join(res.output.split()) and "Traceback" not in res.output
    assert files_of(on_ray) == files_of(local)  # every JSON, image, label, instances.json, unreadable.txt, record
    coco = json.loads((on_ray / "instances.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == [f"im{i}.png" for i in range(6)]
    assert any("segmentation" in a for a in coco["annotations"])


def test_ray_resumes_a_local_run(local_ray, tmp_path, tiny_ckpt, folder):
    (folder / "broken.jpg").unlink()
    whole, out = tmp_path / "whole", tmp_path / "out"
    assert run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", whole)).exit_code == 0
    first = sorted(folder.iterdir())[:2]
    assert run(*detect_args(tiny_ckpt, *first, *ARGS, "-o", out)).exit_code == 0
    res = run(*detect_args(tiny_ckpt, folder, *ARGS, "-o", out, "--ray", "--resume"))
    assert res.exit_code == 0, res.output
    assert "kept the results of 2 images" in res.output and "results of 4 images saved" in res.output
    assert files_of(out) == files_of(whole)
    other = run(*detect_args(tiny_ckpt, folder, *ARGS, "--conf", "0.5", "-o", out, "--ray", "--resume"))
    assert other.exit_code == 2 and "conf: 0.2 before, 0.5 now" in other.output


def test_a_worker_without_its_model_is_one_sentence(local_ray, tmp_path, tiny_ckpt, folder):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (bad / name).write_bytes((tiny_ckpt / name).read_bytes())
    out = tmp_path / "out"
    res = run(*detect_args(bad, folder, *ARGS, "-o", out, "--ray"))
    assert res.exit_code == 2, res.output
    assert "a Ray worker could not label" in res.output and "cannot be loaded" in res.output
    assert "Traceback" not in res.output and not out.exists()  # nothing written


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_serve_replicas_answer_as_a_direct_call(local_ray, tiny_ckpt):
    import httpx
    from ray import serve

    from dart.serve import ServeConfig
    from dart.serve.ray_serve import ray_application, serve_on_ray

    setup = Setup(checkpoint=str(tiny_ckpt), imgsz=TINY_IMGSZ, device="cpu", precision="fp32")
    classes = ["person", "car", "dog"]
    config = ServeConfig(classes=classes, conf=0.2, max_batch=2, max_wait_ms=10)
    port = free_port()
    app = ray_application(setup, classes, config, replicas=2, cpus=0.5, threads=1)
    serve_on_ray(app, host="127.0.0.1", port=port, blocking=False)
    try:
        direct = setup.build_detector(classes, conf=0.2)
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as client:
            assert client.get("/v1/health").json() == {"status": "ok"}
            info = client.get("/v1/info").json()
            assert info["fingerprint"] == direct.backend.fingerprint and info["classes"] == classes
            for seed in range(4):
                image = make_image(90, 160, seed=seed)
                res = client.post("/v1/detect", files={"image": ("x.png", cv2.imencode(".png", image)[1].tobytes(),
                                                                  "image/png")})
                assert res.status_code == 200, res.text
                want = json.loads(json.dumps(result_json("x.png", image.shape[:2], direct.classes,
                                                         direct.detect(image), direct.class_prompts)))
                got = res.json()
                assert [d["class_name"] for d in got["detections"]] == [d["class_name"] for d in want["detections"]]
                for a, b in zip(got["detections"], want["detections"]):
                    assert np.allclose(a["box_xyxy"], b["box_xyxy"], atol=0.02) and abs(a["score"] - b["score"]) < 1e-4
            bad = client.post("/v1/detect", files={"image": ("x.png", b"not an image", "image/png")})
            assert bad.status_code == 400 and "not an image" in bad.json()["error"]
            assert "<html" in client.get("/").text.lower()
    finally:
        serve.shutdown()
