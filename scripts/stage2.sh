#!/usr/bin/env bash
# FarSLIP stage 2 (the paper's run): farslip2 on MGRS-200k, starting from the stage-1 checkpoint,
# with Long-CLIP 248-token text as the released FarSLIP2 checkpoints.
#
#   scripts/stage2.sh NGPUS /data/mgrs/text_info.json /data/mgrs/global_imgs STAGE1_CKPT [-- extra flags]
#
# STAGE1_CKPT is e.g. logs/farslip1-ViT-B-16/checkpoints/epoch_1.pt. It records its architecture
# and QuickGELU, which the trainer reads. Environment: MODEL (default: what STAGE1_CKPT records;
# a contradicting MODEL is an error), NAME (farslip2-$MODEL), LOGS (./logs), PYTHON (python),
# NNODES/NODE_RANK/MASTER_ADDR/MASTER_PORT for multi-node torchrun. A stage-1 checkpoint from
# before the record gets the recipe's ViT-B-16 (or MODEL) and --force-quick-gelu.
# Not in the published recipe: a step checkpoint every 1000 steps (--save-every-n-steps 1000,
# the newest 2 kept), so a killed run continues where it was: the same command plus
# `-- --resume latest`. `-- --save-every-n-steps 0` turns them off.
set -euo pipefail
if [ $# -lt 4 ]; then sed -n '2,14p' "$0"; exit 2; fi
NGPUS=$1; JSON=$2; IMGS=$3; STAGE1=$4; shift 4
[ "${1:-}" = "--" ] && shift
[ -f "$STAGE1" ] || { echo "stage2.sh: no stage-1 checkpoint at $STAGE1" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# the checkout's open_clip_train/ shim must win over the installed package; relative data paths
# stay relative to where the script is called from
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
RECORDED=$("${PYTHON:-python}" -c 'import sys; from farslip.models.record import read_settings
s = read_settings(sys.argv[1]); print(s["arch"] if s else "")' "$STAGE1")
LEGACY=()
if [ -z "$RECORDED" ]; then LEGACY=(--force-quick-gelu); fi
MODEL=${MODEL:-${RECORDED:-ViT-B-16}}
NAME=${NAME:-farslip2-$MODEL}
exec torchrun --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${MASTER_PORT:-29500}" \
  --nproc_per_node="$NGPUS" -m open_clip_train.main \
  --train-dataset-name MGRS --root-train-img-dir "$IMGS" --train-data "$JSON" \
  --train-dataset-type json --method farslip2 --local-method randomcrops --warmup 250 \
  --batch-size 10 --lr 4e-9 --wd 1.0 --epochs 10 --model "$MODEL" \
  --loss-type global_itc distill local_itc --distill-align roi2pooled --local-itc-align cls \
  --pretrained "$STAGE1" --long-text --save-every-n-steps 1000 ${LEGACY[@]+"${LEGACY[@]}"} \
  --logs-root "${LOGS:-./logs}" --name "$NAME" "$@"
