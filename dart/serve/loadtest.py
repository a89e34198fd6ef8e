"""A bounded load test of ``dart serve`` on loopback: N concurrent clients for T seconds (and at most M requests).

Each client posts images from a fixed set in turn; every answer is checked against the expected detections for
that image (computed beforehand by a direct :class:`~dart.detector.Detector` call), so a lost request or an answer
that belongs to another request counts as a failure. Reports throughput and latency percentiles.

    python -m dart.serve.loadtest --url http://127.0.0.1:8000 --images photos/ --clients 8 --seconds 20
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class LoadReport:
    clients: int
    seconds: float
    requests: int = 0
    ok: int = 0
    mismatched: int = 0  # answered, but not with this image's detections
    failed: int = 0  # no answer, or an error status
    busy: int = 0  # 503: the queue was full (not a failure of correctness)
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("latencies_ms", "errors")}
        out.update(throughput_rps=round(self.throughput, 3), p50_ms=round(self.percentile(50), 1),
                   p99_ms=round(self.percentile(99), 1),
                   mean_ms=round(statistics.fmean(self.latencies_ms), 1) if self.latencies_ms else None,
                   first_errors=self.errors[:3])
        return out


def same_detections(got: Sequence[dict], expected: Sequence[dict], score_tol: float = 1e-3,
                    box_tol: float = 0.05) -> bool:
    """Whether two ``detections`` lists of the JSON agree (same classes in order; scores and boxes to float noise:
    a batched backbone may differ from a single-image one in the last bits)."""
    if len(got) != len(expected):
        return False
    for g, e in zip(got, expected):
        if g["class_name"] != e["class_name"] or abs(g["score"] - e["score"]) > score_tol:
            return False
        if any(abs(a - b) > box_tol for a, b in zip(g["box_xyxy"], e["box_xyxy"])):
            return False
    return True


def run_load(url: str, images: Sequence[tuple[str, bytes]], expected: Sequence[Sequence[dict]], *, clients: int = 4,
             seconds: float = 10.0, max_requests: int = 1000, data: dict[str, str] | None = None,
             headers: dict[str, str] | None = None,
             on_request: Callable[[], None] | None = None) -> LoadReport:
    """``clients`` threads post ``images`` (``(name, encoded bytes)``) to ``url``/v1/detect for ``seconds`` (at most
    ``max_requests`` in all), checking each answer against ``expected[i]``. Loopback URLs only."""
    import httpx

    host = httpx.URL(url).host
    if host not in {h.strip("[]") for h in LOOPBACK}:
        raise ValueError(f"the load test runs against this machine only (127.0.0.1 / localhost), not {host}.")
    report = LoadReport(clients=clients, seconds=seconds)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    counter = iter(range(max_requests))

    def client(index: int) -> None:
        with httpx.Client(base_url=url, timeout=120, headers=headers or {}) as session:
            turn = index
            while time.monotonic() < deadline:
                with lock:
                    if next(counter, None) is None:
                        return
                    report.requests += 1
                which = turn % len(images)
                turn += 1
                name, body = images[which]
                start = time.perf_counter()
                try:
                    res = session.post("/v1/detect", files={"image": (name, body)}, data=data or {})
                except httpx.HTTPError as exc:
                    with lock:
                        report.failed += 1
                        report.errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    if res.status_code == 503:
                        report.busy += 1
                    elif res.status_code != 200:
                        report.failed += 1
                        report.errors.append(f"{res.status_code}: {res.text[:200]}")
                    elif res.json().get("image") != name or not same_detections(res.json()["detections"],
                                                                                expected[which]):
                        report.mismatched += 1
                        report.errors.append(f"{name}: the answer is not this image's detections")
                    else:
                        report.ok += 1
                        report.latencies_ms.append(elapsed)
                if on_request is not None:
                    on_request()

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.seconds = time.monotonic() - start
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: expected answers come from a direct Detector on the same checkpoint (``--checkpoint``)."""
    import argparse
    import json

    import cv2

    from dart.detector import Detector
    from dart.images import expand_images, result_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--images", nargs="+", required=True, help="images (files, folders or globs)")
    parser.add_argument("--classes", required=True, help="comma-separated, as the server is asked")
    parser.add_argument("--checkpoint", required=True, help="the server's checkpoint, for the expected answers")
    parser.add_argument("--imgsz", type=int, default=1008)
    parser.add_argument("--conf", type=float, default=0.3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-requests", type=int, default=1000)
    args = parser.parse_args(argv)
    paths = expand_images(args.images)
    names = [c.strip() for c in args.classes.split(",") if c.strip()]
    detector = Detector.from_pretrained(args.checkpoint, names, imgsz=args.imgsz, conf=args.conf, device="cpu")
    images, expected = [], []
    for path in paths:
        array = cv2.imread(str(path))
        images.append((path.name, cv2.imencode(".png", array)[1].tobytes()))
        expected.append(result_json(path.name, array.shape[:2], names, detector.detect(array))["detections"])
    report = run_load(args.url, images, expected, clients=args.clients, seconds=args.seconds,
                      max_requests=args.max_requests, data={"classes": args.classes, "conf": str(args.conf)})
    print(json.dumps(report.summary(), indent=2))
    return 0 if report.failed == 0 and report.mismatched == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
