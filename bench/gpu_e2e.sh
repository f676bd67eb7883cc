#!/usr/bin/env bash
# The end-to-end benchmark on a GPU (device tool), as one prepared script: sdbert's loop (base, sda5,
# sda_all, sdv5 sequential and batched) against a plain PyTorch loop and Hugging Face Trainer, BERT-base
# geometry (random init, no download), synthetic full-length sequences, batch 16, bf16. Writes the
# table, results.json, the card and the versions to $OUT. One sequence length per call keeps a call
# well under the 10-minute limit:
#     bash bench/gpu_e2e.sh 128        # then, on the warm machine:  bash bench/gpu_e2e.sh 512
# The moonshot (issue 9: >= 1,000 samples/s at 512, ~40 % of the bf16 peak) is a third call: BASE eager and
# compiled (train.py's compile=true) in the plain loop and sdbert's, at full-length (static) sequences:
#     COMPILE=1 STRATEGIES=base LOOPS="plain sdbert" bash bench/gpu_e2e.sh 512
# CPU smoke test of this very script (tiny geometry, a few steps):
#     GEOMETRY=tiny DEVICE=cpu STEPS=2 WARMUP=1 OUT=/tmp/gpu_e2e bash bench/gpu_e2e.sh 32
# Packages the device lacks (hydra-core, omegaconf, lightning, torchmetrics, accelerate, ...) are
# installed from .gpu/whl/*.whl when that folder is carried (see bench/gpu_session.sh).
set -uo pipefail
SEQ=${1:-128}
OUT=${OUT:-/tmp/out}
GEOMETRY=${GEOMETRY:-bert-base}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-40}
WARMUP=${WARMUP:-10}
STRATEGIES=${STRATEGIES:-base sda5 sda_all sdv5_seq sdv5_batched}
LOOPS=${LOOPS:-plain hf sdbert}
COMPILE=${COMPILE:-0}
EXTRA=()
[[ $COMPILE == 1 ]] && EXTRA+=(--compile)
PY=${PYTHON:-python3}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_e2e_seq$SEQ.log") 2>&1
if compgen -G ".gpu/whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
fi
$PY - <<'PY' | tee "$OUT/versions.txt"
import importlib, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
for name in ("transformers", "lightning", "accelerate", "hydra", "omegaconf", "torchmetrics"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError as err:
        print(name, "MISSING:", err)
PY
start=$SECONDS
# shellcheck disable=SC2086
$PY -W ignore -m sdbert.bench --geometry "$GEOMETRY" --data synthetic --seq "$SEQ" --batch 16 \
  --steps "$STEPS" --warmup "$WARMUP" --device "$DEVICE" --strategies $STRATEGIES --loops $LOOPS "${EXTRA[@]}" \
  --out "$OUT/e2e_seq$SEQ$([[ $COMPILE == 1 ]] && echo _compile)"
echo "== gpu_e2e seq $SEQ (compile=$COMPILE) took $((SECONDS - start)) s; tables under $OUT"
