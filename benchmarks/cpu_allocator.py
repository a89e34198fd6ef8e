"""The C allocator's thresholds on a CPU (dart.allocator), each system of `dart bench peers` timed with and without
them, alternately, in child processes on the same weights and image.

For dart "default" means ``DART_CPU_ALLOCATOR=system`` (glibc as it comes) and "tuned" dart's own setting, which
it applies itself. For the peers (Meta's ``sam3``, the DART research code, transformers), which do not touch the
allocator, "tuned" gives them the same thresholds through glibc's ``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` environment variables: what any PyTorch program gets from them is shown beside what dart
gets. Each round runs every (system, setting) pair, the order reversed in every other round; medians over rounds.

    python benchmarks/cpu_allocator.py sam3.pt --systems dart-auto,meta-bf16 --counts 1,4,80 --rounds 2 --threads 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

SETTINGS = ("default", "tuned")


def environment_for(family: str, setting: str) -> dict[str, str]:
    from dart import allocator

    if family == "dart":
        return {allocator.ENV: "keep" if setting == "tuned" else "system"}
    if setting == "tuned":
        return {"MALLOC_MMAP_THRESHOLD_": str(allocator.MMAP_THRESHOLD),
                "MALLOC_TRIM_THRESHOLD_": str(allocator.TRIM_THRESHOLD)}
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="Meta's sam3.pt (random full-size weights are fine: speed only)")
    parser.add_argument("--systems", default="dart-auto,meta-bf16")
    parser.add_argument("--counts", default="1,4,80")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--research-repo", help="the DART research clone (for dart-research-* systems)")
    parser.add_argument("--tokenizer", help="CLIP's bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--json", help="also write every run here")
    args = parser.parse_args()

    from dart.bench.class_scaling import class_names
    from dart.bench.peers import SYSTEMS, _run_child, merge_rounds, prepare_weights

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    counts = [int(c) for c in args.counts.split(",")]
    pairs = [(system, setting) for system in systems for setting in SETTINGS]
    runs: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
    with tempfile.TemporaryDirectory(prefix="dart-allocator-") as tmp:
        work = Path(tmp)
        paths = prepare_weights(args.checkpoint, work, class_names(max(counts)), args.tokenizer,
                                transformers=any(SYSTEMS[s]["family"] == "transformers" for s in systems))
        for round_index in range(args.rounds):
            for system, setting in pairs if round_index % 2 == 0 else list(reversed(pairs)):
                spec = {"system": system, **paths, "engines": None, "image": None, "counts": counts,
                        "device": "cpu", "threads": args.threads, "warmup": 1, "runs": 2, "runs_large": 1}
                row = _run_child(spec, work, args.research_repo, None, lambda line: None,
                                 extra_env=environment_for(SYSTEMS[system]["family"], setting))
                runs[(system, setting)].append(row)
                shown = row.get("error") or ", ".join(f"{k}: {v:.2f} s" for k, v in row["per_image_s"].items())
                print(f"round {round_index + 1} {system} {setting}: image part {row.get('image_s', float('nan')):.2f}"
                      f" s; per image {shown}; peak {row.get('peak_rss_mb', float('nan')) / 1024:.2f} GB", flush=True)
    # each pair's medians over its rounds, as `dart bench peers --rounds` gives them
    medians = {f"{system} {setting}": merge_rounds(rows) for (system, setting), rows in runs.items()
               if any("per_image_s" in row for row in rows)}
    print("\n| system | setting | image part s | " + " | ".join(f"{c} classes s" for c in counts) + " | peak RSS GB |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in counts) + " | --- |")
    for system in systems:
        base = medians.get(f"{system} default")
        for setting in SETTINGS:
            m = medians.get(f"{system} {setting}")
            if m is None:
                continue
            cells = []
            for c in counts:
                value = m["per_image_s"][str(c)]
                gain = f" ({base['per_image_s'][str(c)] / value:.2f}x)" if base and setting == "tuned" else ""
                cells.append(f"{value:.2f}{gain}")
            print(f"| {system} | {setting} | {m['image_s']:.2f} | " + " | ".join(cells)
                  + f" | {m['peak_rss_mb'] / 1024:.2f} |")
    if args.json:
        from dart.io import write_json

        write_json(args.json, {"threads": args.threads, "counts": counts, "medians": medians,
                               "runs": {f"{s} {t}": rows for (s, t), rows in runs.items()}})


if __name__ == "__main__":
    main()
