#!/bin/bash
# Multi-node SN-GAN training on Slurm with torchrun (one torchrun per node, one process per GPU).
#
#   sbatch scripts/slurm_train.sh stl10_resnet_sn_hinge            # a new run
#   sbatch scripts/slurm_train.sh --resume runs/00007-stl10_resnet_sn_hinge
#
# Any further arguments are passed to `sngan train` (for example --set train.steps=200000).
# The run folder must be on a file system all nodes share; only rank 0 writes to it.
#SBATCH --job-name=sngan
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=24:00:00
# SIGTERM two minutes before the time limit: sngan finishes the step, checkpoints and exits
# with a "Resume with" line; resubmit with --resume RUN_DIR.
#SBATCH --signal=TERM@120
set -euo pipefail

if [ "${1:-}" = "--resume" ]; then
    args=(--resume "${2:?usage: slurm_train.sh --resume RUN_DIR}")
    shift 2
else
    args=(--config "${1:?usage: slurm_train.sh CONFIG [sngan train options]}")
    shift
fi

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
gpus_per_node=${SLURM_GPUS_ON_NODE:-$(nvidia-smi -L | wc -l)}

srun torchrun \
    --nnodes="$SLURM_NNODES" \
    --nproc_per_node="$gpus_per_node" \
    --rdzv_id="$SLURM_JOB_ID" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$head_node:29500" \
    -m sngan train "${args[@]}" --no-progress "$@"
