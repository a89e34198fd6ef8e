"""Preprocessing gives the same pixel values as transformers' Sam3ImageProcessor; image errors are sentences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dart.errors import InputError
from dart.preprocess import load_image, preprocess, to_rgb
from tests.conftest import make_image


@pytest.mark.parametrize("size", [(90, 160), (300, 200)])
def test_matches_transformers_image_processor(size):
    from transformers import Sam3ImageProcessor

    rgb = to_rgb(make_image(*size))
    ours = preprocess([rgb], 112)
    ref = Sam3ImageProcessor(size={"height": 112, "width": 112})(images=[rgb], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_bgr_array_path_and_pil_agree(tmp_path):
    from PIL import Image

    bgr = make_image()
    path = tmp_path / "x.png"
    import cv2

    cv2.imwrite(str(path), bgr)
    a, b = to_rgb(bgr), to_rgb(path)
    c = to_rgb(Image.fromarray(bgr[:, :, ::-1].copy()))
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert c.flags.writeable and c.flags.c_contiguous  # torch.from_numpy warns on a read-only PIL view


def test_bad_images_are_sentences(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(bad)
    with pytest.raises(InputError, match="uint8"):
        to_rgb(np.zeros((4, 4, 3), dtype=np.float32))
