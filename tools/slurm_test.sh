#!/usr/bin/env bash
# Usage: [GPUS=8 GPUS_PER_NODE=8 CPUS_PER_TASK=5 SRUN_ARGS=...] \
#        tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]
set -euo pipefail
exec "$(dirname "$0")/slurm_run.sh" "$1" "$2" test.py "$3" "$4" --launcher=slurm "${@:5}"
