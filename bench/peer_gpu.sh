#!/usr/bin/env bash
# bench/peer_throughput.py on one GPU: mtlzoo on Keras-JAX against PyTorch eager and
# torch.compile, fp32 and bf16, batch sizes 256 to 4096, two rounds; it starts no measurement after
# 7 minutes (--deadline 420) so that it ends within 8 on one H100/H200, keeping what it measured.
#
# Made for a machine with JAX (CUDA) and PyTorch but no TensorFlow and no network: Keras and two
# of its needs (namex, optree) travel as wheels in .whl/ beside the repo's files, made here with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl keras==3.15.1 namex optree
# Writes bench/results/peer_throughput_gpu.{json,md} (or under $PEER_OUT). PEER_DEVICE=cpu runs
# the same sweep on the CPU (a check that the script works where no GPU is); extra arguments go
# to peer_throughput.py (--quick: one short round).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PEER_PYTHON:-python3}"
device="${PEER_DEVICE:-gpu}"
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=3
if ! "$python" -c "import keras" 2> /dev/null && compgen -G ".whl/*.whl" > /dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/peer-site .whl/*.whl
  export PYTHONPATH="/tmp/peer-site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$python" -c "import keras, torch, jax" || {
  echo "peer_gpu.sh needs keras, jax and torch importable by $python (see the wheels above)" >&2
  exit 1
}
"$python" bench/peer_throughput.py --device "$device" --frameworks keras-jax,torch-eager,torch-compile \
  --batches 256,1024,4096 --precisions fp32,bf16 --rounds 2 --seconds 0.5 --deadline 420 \
  --out "${PEER_OUT:-bench/results}/peer_throughput_$device" "$@"
