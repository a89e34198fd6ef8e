"""The page at ``/`` of ``dart serve``, driven in a real headless Chromium by Playwright: pick an image, type classes,
detect, move the threshold, download the JSON; what it shows equals the server's answer, which equals a direct
``Detector`` call (``tests/test_serve.py``). Its mask decoder (COCO RLE in JavaScript) equals pycocotools'.

Chromium comes from the system (Debian's ``chromium`` package; ``.ci/run`` installs it), found on the PATH or at
``$DART_CHROMIUM``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="dart serve needs FastAPI (the serve extra, in dev)")
playwright = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (in dev)")
CHROMIUM = os.environ.get("DART_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="the browser test needs Chromium: apt install chromium "
                                                     "(.ci/run installs it), or set DART_CHROMIUM")

from dart.detector import Detector  # noqa: E402
from dart.serve import ServeConfig, create_app  # noqa: E402
from tests.conftest import make_image  # noqa: E402

CLASSES = ["person", "car", "dog"]


@pytest.fixture()
def server(tiny_backend):
    from tests.serve_helpers import running_server

    with running_server(create_app(Detector(tiny_backend), ServeConfig(classes=CLASSES))) as url:
        yield url


@pytest.fixture()
def browser():
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def _server_answer(server: str, path: Path, classes: str, masks: bool) -> dict:
    import httpx

    with open(path, "rb") as f:
        res = httpx.post(f"{server}/v1/detect", files={"image": (path.name, f, "image/png")},
                         data={"classes": classes, "conf": "0.05", "masks": str(masks).lower()}, timeout=60)
    assert res.status_code == 200, res.text
    return res.json()


def _set_threshold(page, value: float) -> None:
    page.eval_on_selector("#threshold", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                          str(value))


def test_the_page_detects_filters_by_threshold_and_downloads_the_json(server, browser, tmp_path):
    path = tmp_path / "street.png"
    cv2.imwrite(str(path), make_image(90, 160, seed=3))
    answer = _server_answer(server, path, "person, car", masks=False)
    page = browser.new_page(accept_downloads=True)
    page.goto(server + "/")
    page.wait_for_function("document.getElementById('classes').value.length > 0")
    assert page.input_value("#classes") == "person, car, dog"  # the server's vocabulary, from /v1/info
    page.fill("#classes", "person, car")
    page.set_input_files("#file", str(path))
    page.click("#detect")
    page.wait_for_function("document.getElementById('status').textContent.includes('detections at')")
    seen = set()
    for threshold in (0.3, 0.5, 0.05, 0.9):
        _set_threshold(page, threshold)
        expected = [d for d in answer["detections"] if d["score"] >= threshold]
        assert int(page.text_content("#count")) == len(expected), threshold
        assert page.locator("#table tbody tr").count() == len(expected)
        seen.add(len(expected))
    assert len(seen) > 1, "the thresholds tried change what is shown"
    _set_threshold(page, 0.3)
    with page.expect_download() as download:
        page.click("#download")
    saved = json.loads(Path(download.value.path()).read_text())
    assert saved["detections"] == [d for d in answer["detections"] if d["score"] >= 0.3]
    assert saved["classes"] == ["person", "car"] and saved["threshold"] == 0.3


def test_the_page_draws_masks_decoded_as_pycocotools_decodes_them(server, browser, tmp_path):
    from pycocotools import mask as mask_utils

    path = tmp_path / "street.png"
    image = make_image(90, 160, seed=3)
    cv2.imwrite(str(path), image)
    answer = _server_answer(server, path, "person", masks=True)
    rle = answer["detections"][0]["mask"]
    page = browser.new_page()
    page.goto(server + "/")
    decoded = page.evaluate("(rle) => Array.from(decodeRle(rle).mask)", rle)
    expected = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})  # [h, w]
    np.testing.assert_array_equal(np.array(decoded, dtype=np.uint8), expected.flatten(order="F"))
    assert expected.any() and not expected.all()
    page.fill("#classes", "person")
    page.check("#masks")
    page.set_input_files("#file", str(path))
    page.click("#detect")
    page.wait_for_function("document.getElementById('status').textContent.includes('detections at')")
    _set_threshold(page, 0.05)
    painted = page.evaluate("""() => { const c = document.getElementById('canvas');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }""")
    painted = np.array(painted, dtype=np.uint8).reshape(90, 160, 4)[..., :3]
    original = image[..., ::-1]  # the canvas is RGB
    inside = expected.astype(bool)
    assert np.abs(painted[inside].astype(int) - original[inside]).mean() > 10  # the mask is tinted
