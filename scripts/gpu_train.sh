#!/usr/bin/env bash
# Train the default model on a lent GPU within one device session (issue 12): pack here, then three device calls.
#
# A device call carries at most 64 MiB, the working tree (37 MB) included, so the geospatial wheels (26.5 MB) and the
# HR sources (40 MB) travel in three calls on the same warm machine; carried ignored folders stay there between
# calls, and the machine goes back after 30 s idle, so make the calls one after the other:
#
#   bash scripts/gpu_train.sh pack                                      # here: .carry/, .gpu-a/, .gpu-b/
#   run(command="bash scripts/gpu_train.sh unpack", carry=[".carry"])
#   run(command="true", carry=[".gpu-a"])
#   run(command="bash scripts/gpu_train.sh run 5", carry=[".gpu-b"], timeout_s=570)
#
# Budget of a 15-minute device session: the start (minutes), the two carrying calls, then the last call. Measured on
# the 2-core CPU here (the tiny run below): archives and caches 1.7-2 min (the five caches prepared in parallel), the
# eight evaluations 1.2 min; the GPU machine's 16 cores and GPU should not be slower, so `run 5` leaves about 4 min
# for everything but training.
#
# `run MINUTES` rebuilds the archives from the carried sources (scripts/make_archive.py), prepares the training cache
# and the held-out caches with the seeds of the CPU runs, measures the training speed on 40 steps, trains
# weights/train-gpu.toml for about MINUTES minutes, scores the result and the shipped model on the held-out caches,
# and writes to $OUT five files (the tool returns at most 8, of 16 MiB each): the weights in two parts (`cat
# model.safetensors.part-* > W` joins them), metrics.jsonl, evaluations.json and run.log.
#
# Tested on the CPU as a tiny run (8 min): `PYTHON=.venv/bin/python RSSR_TRAIN_DEVICE=cpu RSSR_TRAIN_SET="batch_size=2
# crop=10 real_lr_batch=2" OUT=/tmp/gpu-out bash scripts/gpu_train.sh run 0.1` (RSSR_TRAIN_SET: more --set overrides,
# separated by spaces). The held-out caches it rebuilt were bit for bit data-work's, and the shipped model scored on
# them as in the model card.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
python=${PYTHON:-python3}
limit=$((64 * 1024 * 1024))
shared=${RSSR_SHARED_DATA:-$repo/../shared/data}

# Swiss mosaics 01-04 and 07 (training and validation) travel in the second call, everything else in the third.
SOURCES_A=(hr/swissimage-0p8m/swissimage_0p8m_01_lat46.976_lon9.808.tif
           hr/swissimage-0p8m/swissimage_0p8m_02_lat46.971_lon9.614.tif
           hr/swissimage-0p8m/swissimage_0p8m_03_lat46.920_lon8.970.tif
           hr/swissimage-0p8m/swissimage_0p8m_04_lat46.795_lon10.245.tif
           hr/swissimage-0p8m/swissimage_0p8m_07_lat46.458_lon7.523.tif)
SOURCES_B=(hr/swissimage-0p8m/swissimage_0p8m_08_lat46.317_lon7.970.tif
           hr/banepa-drone hr/inria-0p3m hr/naip-rgbn hr/satellogic-1m s2/no-crs)
REAL_LR=s2/no-crs/S2_10m_B02_B03_B04_B08_nocrs.tif

tree_bytes() {
    git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s | awk '{n += $1} END {print n + 0}'
}

pack() {
    [ -f .carry/site.tar.xz ] || bash benchmarks/gpu_wheels.sh
    rm -rf .gpu-a .gpu-b
    local part src
    for part in a b; do
        if [ $part = a ]; then set -- "${SOURCES_A[@]}"; else set -- "${SOURCES_B[@]}"; fi
        for src in "$@"; do
            [ -e "$shared/$src" ] || { echo "gpu_train.sh: $shared/$src is missing (set RSSR_SHARED_DATA)" >&2; exit 1; }
            mkdir -p ".gpu-$part/$(dirname "$src")"
            cp -r "$shared/$src" ".gpu-$part/$src"
        done
    done
    local tree over=0 name size
    tree=$(tree_bytes)
    for name in .carry .gpu-a .gpu-b; do
        size=$(du -sb "$name" | cut -f1)
        echo "the call carrying $name takes $((tree + size)) bytes (tree $tree; limit $limit)"
        [ $((tree + size)) -le "$limit" ] || over=1
    done
    [ $over = 0 ] || { echo "gpu_train.sh: a call is over the device tool's limit" >&2; exit 1; }
}

unpack() {
    rm -rf /tmp/site && mkdir -p /tmp/site
    "$python" -c "import tarfile; tarfile.open('.carry/site.tar.xz').extractall('/tmp/site', filter='tar')"
    PYTHONPATH=/tmp/site "$python" -c "import rasterio, pyproj, shapely, rio_cogeo; print('wheels ready:', rasterio.__version__)"
}

# The median patches/s of a run's logged training steps after the first 10 (warm-up excluded).
speed() {
    "$python" - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
rates = [r["patches_per_s"] for r in rows if r.get("kind") == "train" and r["step"] > 10]
print(statistics.median(rates))
EOF
}

run() {
    local minutes=${1:?usage: gpu_train.sh run MINUTES}
    local out=${OUT:-$repo/out/gpu-train} work=${RSSR_GPU_WORK:-/tmp/rssr-gpu}
    local device=${RSSR_TRAIN_DEVICE:-auto}
    # A machine released between the calls (30 s idle) comes back bare: say so before any work.
    local missing
    for missing in .gpu-a .gpu-b; do
        [ -d "$missing" ] || { echo "gpu_train.sh: $missing is not here: make the three calls in a row" >&2; exit 1; }
    done
    mkdir -p "$out"
    rm -rf "$work" && mkdir -p "$work/data"
    exec > >(tee "$out/run.log") 2>&1
    [ -d /tmp/site ] && export PYTHONPATH=/tmp/site:$repo || export PYTHONPATH=$repo
    export PYTHONUNBUFFERED=1
    "$python" -c "import rasterio" 2> /dev/null \
        || { echo "gpu_train.sh: rasterio is not importable: run 'gpu_train.sh unpack' in the call before" >&2; exit 1; }
    local rssr=("$python" -m rssr_cli)
    command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    # Both carried halves into one tree laid out as ../shared/data is.
    cp -r .gpu-a/. "$work/data/" && cp -r .gpu-b/. "$work/data/"

    echo "== archives and caches ($(date -u +%T))"
    "$python" scripts/make_archive.py --data "$work/data" --out "$work/archive"
    # The five caches in parallel, with the options and seeds of the CPU runs (the model card, *Reproduce*).
    local prep=("${rssr[@]}" prepare --synthetic-lr --missing-band mask --patch 16) pids=() pid
    "${prep[@]}" "$work/archive/train-v3.csv" --stride 8 -o "$work/train-v3.npz" & pids+=($!)
    "${prep[@]}" "$work/archive/val.csv" --stride 8 --seed 1 -o "$work/val.npz" & pids+=($!)
    "${prep[@]}" "$work/archive/test.csv" --seed 2 -o "$work/test.npz" & pids+=($!)
    local region
    for region in naip_test banepa_south; do
        "${prep[@]}" "$work/archive/test-$region.csv" --stride 8 --seed 2 -o "$work/test-$region.npz" & pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || { echo "gpu_train.sh: rssr prepare failed" >&2; exit 1; }; done
    local train=("${rssr[@]}" train -c weights/train-gpu.toml "$work/train-v3.npz" --device "$device"
                 --set "real_lr=[\"$work/data/$REAL_LR\"]")
    local override
    for override in ${RSSR_TRAIN_SET:-}; do train+=(--set "$override"); done

    echo "== speed ($(date -u +%T))"
    "${train[@]}" -o "$work/speed" --steps 40 --set log_every=5 --set val_every=1000 --set checkpoint_every=1000 > /dev/null
    local rate batch steps
    rate=$(speed "$work/speed/metrics.jsonl")
    batch=$("$python" -c "import tomllib; print(tomllib.load(open('weights/train-gpu.toml', 'rb'))['train']['batch_size'])")
    for override in ${RSSR_TRAIN_SET:-}; do [[ $override == batch_size=* ]] && batch=${override#batch_size=}; done
    steps=$("$python" -c "print(max(100, int($minutes * 60 * $rate / $batch) // 100 * 100))")
    echo "$rate patches/s at batch $batch: $steps steps for $minutes min"

    echo "== train ($(date -u +%T))"
    "${train[@]}" -o "$work/run" --steps "$steps"
    cp "$work/run/metrics.jsonl" "$out/metrics.jsonl"
    split -b 15M -d "$work/run/model.safetensors" "$out/model.safetensors.part-"

    echo "== evaluate ($(date -u +%T))"
    local cache
    mkdir -p "$work/eval"
    for cache in val test test-naip_test test-banepa_south; do
        "${rssr[@]}" evaluate "$work/$cache.npz" --weights "$work/run/model.safetensors" -m lr_start -m bicubic \
            --device "$device" --json > "$work/eval/trained_$cache.json"
        "${rssr[@]}" evaluate "$work/$cache.npz" -m lr_start --device "$device" --json > "$work/eval/shipped_$cache.json"
    done
    # One file: the device tool returns at most 8.
    "$python" - "$work/eval" "$out/evaluations.json" <<'EOF'
import json, pathlib, sys
folder = pathlib.Path(sys.argv[1])
runs = {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}
pathlib.Path(sys.argv[2]).write_text(json.dumps(runs, indent=1))
for name, run in runs.items():
    methods = run["methods"]
    gain = methods["lr_start"]["psnr"] - methods["bicubic"]["psnr"] if "bicubic" in methods else None
    print(name, f"PSNR {methods['lr_start']['psnr']:.3f}", "" if gain is None else f"gain over bicubic {gain:+.3f}",
          f"detail {methods['lr_start']['detail']:.3f}")
EOF
    echo "== done ($(date -u +%T))"
}

case ${1:-} in
    pack) pack ;;
    unpack) unpack ;;
    run) shift; run "$@" ;;
    *) echo "usage: gpu_train.sh pack | unpack | run MINUTES" >&2; exit 2 ;;
esac
