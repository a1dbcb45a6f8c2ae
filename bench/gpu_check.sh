#!/usr/bin/env bash
# The GPU checks (compute nodes with `device: cuda`) as one command for a GPU machine that has
# PyTorch with CUDA but neither mpsl nor a network, as this workplace's device machines: the
# equivalence tests (tests/e2e/test_gpu.py), the epoch-time comparison (bench/gpu.py) and a
# profile measured on the GPU.
# pyzmq, the one dependency such an image lacks, comes as wheels in .whl/ (bench/README.md,
# "GPU compute nodes"). Writes gpu.txt (the GPU, versions, the profile's table), tests.log,
# bench.log, gpu.{csv,json,md} and profile_cuda.csv into $OUT (default gpu-out/); exits
# non-zero when the tests, the benchmark or the profile fail.
#
#   bash bench/gpu_check.sh --fetch   here, once: pyzmq's wheel for Python 3.12 into .whl/
#   bash bench/gpu_check.sh           there, with .whl carried along
set -uo pipefail
if [ "${1:-}" = "--fetch" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    exec python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "pyzmq==$(python3 -c 'import zmq; print(zmq.__version__)' \
        2>/dev/null || .venv/bin/python -c 'import zmq; print(zmq.__version__)')"
fi
out=${OUT:-gpu-out}
py=${PY:-python3}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/mpsl-site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/mpsl-site:$PWD"
else
    export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  "$py" -c "import sys, torch, zmq; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA', zmq.__version__)"
} > "$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
"$py" -m pytest -q -p no:cacheprovider tests/e2e/test_gpu.py 2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
"$py" -m bench.gpu --results "$out" 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}
# a node's profile measured on the GPU (`mpsl profile --device cuda`), its table into gpu.txt
"$py" -m mpsl.cli profile topologies/two_hop.yaml --device cuda --out "$out/profile_cuda.csv" \
    2>&1 | tee -a "$out/gpu.txt"
profile=${PIPESTATUS[0]}
echo "tests rc=$tests, bench rc=$bench, profile rc=$profile"
exit $((tests || bench || profile))
