#!/usr/bin/env bash
# Packs rssr's geospatial dependencies for the lent GPU machine (Python 3.12, PyTorch already there, no network) into
# .carry/site.tar.xz (git-ignored, about 26 MB), which benchmarks/gpu_check.sh unpacks there. Run once, here, in the
# repository's root; it needs pip's access to the package index.
#
# Size: a device call carries at most 64 MiB, the working tree included (37 MB in session 24: the shipped model, the
# example scene, the model card's figures). The wheels alone are 49 MB; xz over the unpacked wheels gives 34 MB, and
# stripping the debug information of the compiled extension modules (rasterio's and pyproj's ship with it; the
# bundled libraries in *.libs are already stripped) brings it to 26 MB. The script ends by adding up what a call
# would carry and fails when it is over the limit.
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
# Debug sections only: symbols, sonames and the code stay as they are.
find "$work/site" -name '*-linux-gnu.so' -exec strip --strip-debug {} +
tar -C "$work/site" -cf - . | xz -9 -T0 > .carry/site.tar.xz
ls -l .carry/site.tar.xz
# What a device call with carry=[".carry"] takes: tracked and untracked-not-ignored files, and .carry.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s | awk '{n += $1} END {print n + 0}')
carry=$(du -sb .carry | cut -f1)
limit=$((64 * 1024 * 1024))
echo "a device call carries $((tree + carry)) bytes: the working tree $tree, .carry $carry (limit $limit)"
if [ $((tree + carry)) -gt "$limit" ]; then
    echo "over the device tool's limit: carry less, or move large untracked files out of the tree" >&2
    exit 1
fi
