"""``dart serve``: every answer equals a direct ``Detector`` call on the same image, under concurrency too; limits,
keys and bad input are answered with the documented status and one sentence."""

from __future__ import annotations

import json
import threading
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="dart serve needs FastAPI (the serve extra, in dev)")

from fastapi.testclient import TestClient  # noqa: E402

from dart.detector import Detector  # noqa: E402
from dart.images import result_json  # noqa: E402
from dart.serve import ServeConfig, create_app  # noqa: E402
from tests.conftest import make_image  # noqa: E402

CLASSES = ["person", "car", "dog"]


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def direct(tiny_backend, image, classes=CLASSES, conf=0.2, nms=0.7, masks=False):
    det = Detector(tiny_backend, classes, conf=conf, nms=nms, masks=masks)
    return json.loads(json.dumps(result_json("x.png", image.shape[:2], det.classes, det.detect(image),
                                             det.class_prompts)))


@pytest.fixture()
def client(tiny_backend):
    config = ServeConfig(classes=CLASSES, conf=0.2, max_batch=4, max_wait_ms=20, api_key=None)
    with TestClient(create_app(Detector(tiny_backend), config)) as c:
        yield c


def test_detect_equals_a_direct_detector_call(client, tiny_backend):
    image = make_image(90, 160, seed=3)
    res = client.post("/v1/detect", files={"image": ("x.png", png(image), "image/png")})
    assert res.status_code == 200, res.text
    assert res.json() == direct(tiny_backend, image)
    assert res.json()["detections"], "the tiny model finds something at conf 0.2"
    other = client.post("/v1/detect", files={"image": ("x.png", png(image), "image/png")},
                        data={"classes": "car,bus", "conf": "0.1", "masks": "true"})
    assert other.status_code == 200, other.text
    assert other.json() == direct(tiny_backend, image, ["car", "bus"], conf=0.1, masks=True)
    assert all("mask" in row for row in other.json()["detections"])


def test_health_info_and_openapi(client, tiny_backend):
    assert client.get("/v1/health").json() == {"status": "ok"}
    info = client.get("/v1/info").json()
    assert info["fingerprint"] == tiny_backend.fingerprint and info["backend"] == "torch"
    assert info["imgsz"] == tiny_backend.imgsz and info["classes"] == CLASSES and info["limits"]["max_batch"] == 4
    assert "/v1/detect" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_concurrent_clients_are_batched_and_never_get_another_request_s_answer(client, tiny_backend):
    images = [make_image(90, 160, seed=s) if s % 2 else make_image(120, 100, seed=s) for s in range(8)]
    answers: dict[int, dict] = {}

    def call(i: int) -> None:
        res = client.post("/v1/detect", files={"image": (f"im{i}.png", png(images[i]), "image/png")})
        answers[i] = res.json()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, image in enumerate(images):
        expected = direct(tiny_backend, image)
        expected["image"] = f"im{i}.png"
        assert answers[i]["width"] == image.shape[1] and answers[i]["image"] == f"im{i}.png"
        _close(answers[i]["detections"], expected["detections"])  # batched: equal to float noise
    assert max(client.app.state.batcher.batches) > 1  # some requests shared a backbone batch


def _close(got, expected) -> None:
    assert len(got) == len(expected) > 0
    for g, e in zip(got, expected):
        assert g["class_name"] == e["class_name"] and abs(g["score"] - e["score"]) < 1e-4
        assert np.allclose(g["box_xyxy"], e["box_xyxy"], atol=1e-2)


@pytest.mark.parametrize("files, data, status, message", [
    ({"image": ("x.png", b"not an image", "image/png")}, {}, 400, "is not an image OpenCV can read"),
    ({"image": ("x.png", b"", "image/png")}, {}, 400, "is empty"),
    (None, {}, 422, "send an image file"),
    (None, {"url": "http://127.0.0.1:9/x.jpg"}, 422, "does not fetch images from URLs"),
    ({"image": ("x.png", None, "image/png")}, {"conf": "2"}, 422, "conf must be between 0 and 1"),
    ({"image": ("x.png", None, "image/png")}, {"conf": "high"}, 422, "conf"),
    ({"image": ("x.png", None, "image/png")}, {"classes": "a,a"}, 422, "listed twice"),
])
def test_bad_requests_get_their_status_and_one_sentence(client, files, data, status, message):
    if files and files["image"][1] is None:
        files = {"image": ("x.png", png(make_image()), "image/png")}
    res = client.post("/v1/detect", files=files, data=data)
    assert res.status_code == status, res.text
    assert message in res.json()["error"] and "Traceback" not in res.text


def test_limits_api_key_and_a_full_queue(tiny_backend):
    image = png(make_image(90, 160))
    config = ServeConfig(classes=CLASSES, api_key="s3cret", max_upload_mb=0.001, max_pixels=10_000)
    with TestClient(create_app(Detector(tiny_backend), config)) as c:
        assert c.get("/v1/health").status_code == 200  # no key needed to see that it is up
        assert c.get("/v1/info").status_code == 401
        wrong = c.post("/v1/detect", files={"image": ("x.png", image)}, headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
        big = c.post("/v1/detect", files={"image": ("x.png", image)}, headers={"Authorization": "Bearer s3cret"})
        assert big.status_code == 413 and "0.001 MB" in big.json()["error"]
    config = ServeConfig(classes=CLASSES, max_pixels=10_000)
    with TestClient(create_app(Detector(tiny_backend), config)) as c:
        many = c.post("/v1/detect", files={"image": ("x.png", png(make_image(200, 300)))})
        assert many.status_code == 413 and "10,000" in many.json()["error"]
    with TestClient(create_app(Detector(tiny_backend), ServeConfig(classes=CLASSES, queue_size=1))) as c:
        batcher = c.app.state.batcher
        gate = threading.Event()
        original = batcher._run_group
        batcher._run_group = lambda settings, jobs: (gate.wait(5), original(settings, jobs))
        first = threading.Thread(target=c.post, args=("/v1/detect",), kwargs={"files": {"image": ("a.png", image)}})
        first.start()
        time.sleep(0.3)  # the worker holds the first request; fill the one queue slot, then ask once more
        second = threading.Thread(target=c.post, args=("/v1/detect",), kwargs={"files": {"image": ("b.png", image)}})
        second.start()
        time.sleep(0.3)
        busy = c.post("/v1/detect", files={"image": ("c.png", image)})
        gate.set()
        first.join()
        second.join()
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]


def test_dart_serve_runs_on_loopback_and_answers_like_the_detector(tmp_path, tiny_ckpt, tiny_backend):
    """The real command: uvicorn on 127.0.0.1, called over HTTP with httpx."""
    import socket
    import subprocess
    import sys

    import httpx

    from tests.tiny import TINY_IMGSZ

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "dart", "serve", "-c", "person", "car", "dog", "--conf", "0.2",
                             "--checkpoint", str(tiny_ckpt), "--imgsz", str(TINY_IMGSZ), "--device", "cpu",
                             "--port", str(port), "--api-key", "k"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, "DART_THREADS": "1"})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        image = make_image(90, 160, seed=6)
        res = httpx.post(f"{base}/v1/detect", files={"image": ("x.png", png(image), "image/png")},
                         headers={"X-API-Key": "k"}, timeout=60)
        assert res.status_code == 200, res.text
        assert res.json() == direct(tiny_backend, image)
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "serving on http://127.0.0.1:" in out and "Traceback" not in out


def test_the_load_test_loses_nothing_and_mixes_no_answers(tiny_backend):
    """Short and bounded: 4 clients for 3 s (at most 24 requests) against the real server on loopback; every answer
    is checked against a direct Detector call on its own image."""
    from dart.serve.loadtest import run_load
    from tests.serve_helpers import running_server

    images = [make_image(90, 160, seed=s) if s % 2 else make_image(100, 120, seed=s) for s in range(4)]
    expected = [direct(tiny_backend, image)["detections"] for image in images]
    app = create_app(Detector(tiny_backend), ServeConfig(classes=CLASSES, conf=0.2, max_batch=4, max_wait_ms=10))
    with running_server(app) as url:
        report = run_load(url, [(f"im{i}.png", png(im)) for i, im in enumerate(images)], expected, clients=4,
                          seconds=3.0, max_requests=24)
    summary = report.summary()
    assert report.failed == 0 and report.mismatched == 0, summary
    assert report.ok + report.busy == report.requests > 0 and summary["p99_ms"] >= summary["p50_ms"] > 0
    with pytest.raises(ValueError, match="this machine only"):
        run_load("http://10.1.2.3:8000", [], [], seconds=0.1)


def test_a_failing_detector_is_a_500_with_a_sentence_and_the_server_keeps_serving(client, tiny_backend):
    detector = client.app.state.detector
    original = detector.detect_batch
    detector.detect_batch = lambda images: (_ for _ in ()).throw(RuntimeError("out of memory"))
    try:
        res = client.post("/v1/detect", files={"image": ("x.png", png(make_image()), "image/png")})
    finally:
        detector.detect_batch = original
    assert res.status_code == 500 and "the detector failed on this image (RuntimeError: out of memory)" in \
        res.json()["error"]
    again = client.post("/v1/detect", files={"image": ("x.png", png(make_image()), "image/png")})
    assert again.status_code == 200
