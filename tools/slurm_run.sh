#!/usr/bin/env bash
# What tools/slurm_train.sh and tools/slurm_test.sh share: srun a script of
# tools/ with GPUS tasks, GPUS_PER_NODE GPUs and tasks per node, CPUS_PER_TASK
# CPUs each, and SRUN_ARGS.
# Usage: tools/slurm_run.sh PARTITION JOB_NAME SCRIPT [SCRIPT's arguments]
set -euo pipefail
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
srun -p "$1" --job-name="$2" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    python -u "$ROOT/tools/$3" "${@:4}"
