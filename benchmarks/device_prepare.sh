#!/usr/bin/env bash
# Prepares a run of benchmarks/device_suite.sh on the GPU machine that cannot reach any package index. Run it here,
# on the development machine (pip's index reachable), from the repository root; it fills .device/ (ignored by git,
# named in the device tool's `carry`):
#
#   .device/wheels/   what the GPU machine (Python 3.12, torch 2.11, transformers 5.17; see the device tool's
#                     KINDS.md) lacks for dart: transformers at the version tested here (dart needs >= 5.20),
#                     pycocotools, ftfy + wcwidth, regex (transformers checks its version when imported), the
#                     CLI's typer, click and rich at the versions tested here with what this typer needs (pydantic,
#                     which that machine lacks), and dart itself as a wheel (used only if building this working
#                     tree there fails); for the DART research code: setuptools < 81 (its `import
#                     pkg_resources`), decord and iopath (imported by its model builder);
#   .device/DART/     the DART research code's `sam3` package and licence, from a local clone (DART_REPO=DIR; the
#                     device tool's `fetch` of mkturkcan/DART, or a git clone); without it the peer rows are skipped.
#
#   DART_REPO=/path/to/DART bash benchmarks/device_prepare.sh
#
# Then, with the device tool: run(command="bash benchmarks/device_suite.sh $OUT", carry=[".device"]).
# Everything that travels must stay under the tool's 64 MiB; the script prints the total.
set -euo pipefail

if [[ -n "${DART_REPO:-}" ]]; then  # checked before anything is downloaded
    if [[ ! -f "$DART_REPO/sam3/model/sam3_multiclass_fast.py" ]]; then
        echo "DART_REPO=$DART_REPO is not a clone of the DART research code (no sam3/model/sam3_multiclass_fast.py)" >&2
        exit 2
    fi
    DART_REPO=$(cd "$DART_REPO" && pwd)
fi
cd "$(dirname "$0")/.."  # the repository root, wherever this is run from
DEST=.device
PY=${PYTHON:-python}
version() { $PY -c "from importlib.metadata import version; print(version('$1'))"; }
TRANSFORMERS=${TRANSFORMERS_VERSION:-$(version transformers)}
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux2010_x86_64
          --platform manylinux1_x86_64)

rm -rf "$DEST/wheels" "$DEST/DART"
mkdir -p "$DEST/wheels"
# one version of each, no dependencies pulled in: the GPU machine already has the rest (KINDS.md's package list)
$PY -m pip download -q --no-deps "${PLATFORM[@]}" -d "$DEST/wheels" \
    "transformers==$TRANSFORMERS" "pycocotools>=2.0.7" "ftfy>=6.1" "wcwidth" "regex>=2025.10.22" \
    $(for name in typer click rich pydantic pydantic-core annotated-types typing-inspection; do
          echo "$name==$(version $name)"; done)
$PY -m pip wheel -q --no-deps --no-build-isolation -w "$DEST/wheels" . >"$DEST/dart-wheel.log" 2>&1 \
    || { cat "$DEST/dart-wheel.log" >&2; exit 1; }

if [[ -n "${DART_REPO:-}" ]]; then
    # what the research code imports beyond dart's needs: pkg_resources (setuptools < 81), decord and iopath (a
    # source release only: built into a wheel here, pure Python)
    $PY -m pip download -q --no-deps "${PLATFORM[@]}" -d "$DEST/wheels" "setuptools<81" "decord==0.6.0"
    $PY -m pip wheel -q --no-deps -w "$DEST/wheels" "iopath==0.1.10" >"$DEST/iopath-wheel.log" 2>&1 \
        || { cat "$DEST/iopath-wheel.log" >&2; exit 1; }
    mkdir -p "$DEST/DART"
    cp -r "$DART_REPO/sam3" "$DEST/DART/"
    cp "$DART_REPO"/LICENSE* "$DEST/DART/" 2>/dev/null || true
    find "$DEST/DART" -name __pycache__ -prune -exec rm -rf {} +
    (cd "$DART_REPO" && git rev-parse HEAD 2>/dev/null || echo "unknown commit") > "$DEST/DART/COMMIT"
else
    echo "DART_REPO not set: the suite will skip the DART research code's rows"
fi

ls -1 "$DEST/wheels"
echo "requirements the carried wheels declare (the GPU machine must already have these):"
for wheel in "$DEST"/wheels/transformers-*.whl; do
    unzip -p "$wheel" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' | sed 's/^/  /'
done
du -sh "$DEST" | sed 's/^/carried: /'
