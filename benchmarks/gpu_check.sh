#!/usr/bin/env bash
# The GPU check of rssr in one command (about 5 minutes on an H200; under 8): the CUDA tests, then
# benchmarks/gpu_throughput.py (network, model only, a 10 km x 10 km AOI end to end, torchrun with 1 and 2 processes),
# everything written to $OUT (or benchmarks/results): gpu_check.log, throughput_cuda.json, nvidia-smi.txt.
#
# The GPU machine has PyTorch but not rssr's geospatial packages (rasterio, rio-cogeo, pyproj, shapely ...): once, here,
# `bash benchmarks/gpu_wheels.sh` packs them into .carry/site.tar.xz (git-ignored), then, with the device tool:
#
#   run(command="bash benchmarks/gpu_check.sh", carry=[".carry"], timeout_s=540)
#
# Without .carry/site.tar.xz the packages must already be importable there.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1
if [ -f .carry/site.tar.xz ]; then
    mkdir -p /tmp/site && python3 -c "import tarfile; tarfile.open('.carry/site.tar.xz').extractall('/tmp/site', filter='tar')" \
        || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch, rasterio, rio_cogeo; print('torch', torch.__version__, torch.cuda.get_device_name(0), \
'rasterio', rasterio.__version__, 'gdal', rasterio.__gdal_version__)" || exit 1
echo "== CUDA tests"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_device_path.py \
    tests/test_diffusion_method.py -k "cuda or fit or compile or batch"
echo "== benchmark"
timeout 420 python3 benchmarks/gpu_throughput.py --out "$out" --compile --nproc 1,2
