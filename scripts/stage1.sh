#!/usr/bin/env bash
# FarSLIP stage 1 (the paper's run): farslip1 on RS5M webdataset shards, from OpenAI CLIP.
#
#   scripts/stage1.sh NGPUS '/data/rs5m/{pub11,rs3}-train-{0000..0031}.tar' [VAL_CSV VAL_IMG_DIR] [-- extra flags]
#
# Environment: MODEL (ViT-B-16), NAME (farslip1-$MODEL), LOGS (./logs), NNODES/NODE_RANK/
# MASTER_ADDR/MASTER_PORT for multi-node torchrun. The checkpoint lands in
# $LOGS/$NAME/checkpoints/epoch_1.pt; pass it to scripts/stage2.sh.
# Not in the published recipe: a step checkpoint every 1000 steps (--save-every-n-steps 1000,
# the newest 2 kept), so a killed run continues where it was: the same command plus
# `-- --resume latest`. `-- --save-every-n-steps 0` turns them off.
set -euo pipefail
if [ $# -lt 2 ]; then sed -n '2,12p' "$0"; exit 2; fi
NGPUS=$1; SHARDS=$2; shift 2
VAL=()
if [ $# -ge 2 ] && [ "$1" != "--" ]; then VAL=(--val-data "$1" --root-val-img-dir "$2"); shift 2; fi
[ "${1:-}" = "--" ] && shift
MODEL=${MODEL:-ViT-B-16}
NAME=${NAME:-farslip1-$MODEL}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# the checkout's open_clip_train/ shim must win over the installed package; relative data paths
# stay relative to where the script is called from
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --nproc_per_node="$NGPUS" -m open_clip_train.main \
  --train-dataset-name RS5M --train-data "$SHARDS" --train-dataset-type webdataset \
  --train-num-samples 5070186 --method farslip1 --use-imagecrop-aug --local-method randomcrops \
  --warmup 1000 --batch-size 10 --lr 1e-6 --wd 1.0 --epochs 1 --model "$MODEL" \
  --loss-type global_itc distill --distill-align roi2pooled \
  --pretrained openai --save-every-n-steps 1000 --logs-root "${LOGS:-./logs}" --name "$NAME" ${VAL[@]+"${VAL[@]}"} "$@"
