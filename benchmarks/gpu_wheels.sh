#!/usr/bin/env bash
# Packs rssr's geospatial dependencies for the lent GPU machine (Python 3.12, PyTorch already there, no network) into
# .carry/site.tar.xz (git-ignored, about 37 MB), which benchmarks/gpu_check.sh unpacks there. Run once, here, in the
# repository's root; it needs pip's access to the package index. The wheels alone (49 MB) and the working tree (26 MB,
# the shipped model among it) would exceed the 64 MiB a device call may carry; xz over the unpacked wheels fits.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$work/whl" \
    rasterio==1.4.4 rio-cogeo==7.0.4 morecantile==7.1.0 pydantic==2.14.4 pydantic_core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 pyproj==3.7.2 shapely==2.2.0 affine==3.0.1 cligj==0.7.2 \
    click-plugins==1.1.1.2
mkdir -p "$work/site" .carry
for wheel in "$work"/whl/*.whl; do
    "$python" -m zipfile -e "$wheel" "$work/site/"
done
rm -rf "$work"/site/shapely/tests
tar -C "$work/site" -cf - . | xz -9 -T0 > .carry/site.tar.xz
ls -l .carry/site.tar.xz
