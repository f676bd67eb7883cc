#!/usr/bin/env bash
# One prepared GPU session (device tool): step-time benchmark at BERT-base geometry, then MiniLM on
# full IMDb (22.5k train / 2.5k dev / 25k test, head-512, bf16) for BASE, SDA K=5 with an eval-mode
# teacher, SDA K=5 with the teacher's dropout on, and SDV K=5 (dropout on), one epoch each.
# Needs in the carried tree: .gpu/whl (wheels missing on the device), .gpu/minilm (the embedded MiniLM,
# weights stored fp16 to fit the 64 MiB transfer), .gpu/imdb/{train,test}.jsonl.xz (the embedded split).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOG="$OUT/session.log"
exec > >(tee -a "$LOG") 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=true
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, lightning, pyarrow, datasets; print('torch', torch.__version__, 'transformers', transformers.__version__, 'lightning', lightning.__version__, 'pyarrow', pyarrow.__version__, 'datasets', datasets.__version__)"

PART=${1:-all}
if [[ $PART == all ]]; then
echo "== benchmark"
python3 bench/step_time.py --geometry bert-base --seq 128 512 --strategies base se sda5 sda_all sdv5 \
  --steps 20 --warmup 5 --out "$OUT/bench_bert_base.json"
fi

echo "== IMDb data"
mkdir -p /tmp/imdb
python3 - <<'PY'
import lzma, shutil
for split in ("train", "test"):
    with lzma.open(f".gpu/imdb/{split}.jsonl.xz") as src, open(f"/tmp/imdb/{split}.jsonl", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
COMMON=(experiment=paper dataset=imdb dataset.source=/tmp/imdb "model.name_or_path=$PWD/.gpu/minilm"
        dataset.batch_size=16 trainer.accumulate_grad_batches=1 dataset.eval_batch_size=256 dataset.num_workers=4
        trainer.max_epochs=1 trainer.log_every_n_steps=10 logger=csv paths.cache_dir=/tmp/sdcache)
run() {
  local name=$1; shift
  echo "== run $name: $*"
  local start=$SECONDS
  timeout "${RUN_LIMIT:-150}" python3 train.py "${COMMON[@]}" "hydra.run.dir=/tmp/runs/$name" "$@" 2>&1 \
    | grep -vE "Tip|LitLogger|UserWarning|warnings.warn|^\s*$" | tail -n 25
  echo "== $name took $((SECONDS - start)) s"
  mkdir -p "/tmp/results/$name"
  cp /tmp/runs/$name/metrics.json /tmp/runs/$name/csv/metrics.csv "/tmp/results/$name/" 2>/dev/null
  tar czf "$OUT/results.tgz" -C /tmp results
}
if [[ $PART == all ]]; then
  RUN_LIMIT=170 run base strategy=base
  RUN_LIMIT=110 run sda5_eval_teacher strategy=sda teacher_size=5 strategy.teacher_dropout=false
  RUN_LIMIT=110 run sda5_dropout_teacher strategy=sda teacher_size=5
  RUN_LIMIT=140 run sdv5_dropout_teacher strategy=sdv teacher_size=5
else  # the other eval-mode teachers of README "Stability" (second call on the warm machine)
  RUN_LIMIT=100 run sda1_eval_teacher strategy=sda teacher_size=1 strategy.teacher_dropout=false
  RUN_LIMIT=120 run sdv5_eval_teacher strategy=sdv teacher_size=5 strategy.teacher_dropout=false
fi
echo "== done"
