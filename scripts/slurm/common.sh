# Shared by train.sbatch and eval.sbatch (sourced inside the batch job, never run on its own).
#
# Settings read from the environment (sbatch passes the submitting shell's environment on):
#   DPROPE_SETUP           a file to source, or shell code to run, before Python starts
#                          (module load ..., conda activate ..., source .venv/bin/activate)
#   DPROPE_PYTHON          the interpreter (default: python of an active venv/conda env, else
#                          <root>/.venv/bin/python when present, else python3)
#   DPROPE_PROCS_PER_NODE  training processes per node (default: the GPUs on the node, 1 without)
#   DPROPE_LAUNCHER        srun: srun starts every training process (default; exact exit codes)
#                          torchrun: srun starts one torchrun per node, which starts the processes
#   DPROPE_MASTER_PORT     rendezvous port (default: 15000 + job id mod 15000)
#   DPROPE_MAX_RESTARTS    requeues of one job before it gives up (default 100)
#
# NCCL and torch.distributed settings (NCCL_SOCKET_IFNAME, NCCL_IB_HCA, NCCL_DEBUG,
# TORCH_NCCL_BLOCKING_WAIT, ...) reach every training process from the submitting shell's
# environment (sbatch's default --export=ALL; srun and torchrun pass it on), or with
# `sbatch --export=ALL,NCCL_DEBUG=INFO ...` where a site exports nothing by default. The job log
# lists the NCCL_* variables in effect. The process-group timeout is trainer.dist_timeout_minutes.

dprope_log() {
    echo "dprope[${SLURM_JOB_ID:-?}]: $*"
}

# The environment every node needs: setup snippet, interpreter, device, rendezvous address.
dprope_environment() {
    if [ -n "${DPROPE_SETUP:-}" ]; then
        set +u  # activation scripts read unset variables
        if [ -f "$DPROPE_SETUP" ]; then
            # shellcheck disable=SC1090
            source "$DPROPE_SETUP"
        else
            eval "$DPROPE_SETUP"
        fi
        set -u
    fi
    if [ -n "${DPROPE_PYTHON:-}" ]; then
        PYTHON=$DPROPE_PYTHON
    elif [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && command -v python >/dev/null; then
        PYTHON=python
    elif [ -x "$DPROPE_ROOT/.venv/bin/python" ]; then
        PYTHON=$DPROPE_ROOT/.venv/bin/python
    else
        PYTHON=python3
    fi
    GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-0}
    if [ "$GPUS_PER_NODE" -eq 0 ] && [ -z "${SLURM_GPUS_ON_NODE:-}" ] && command -v nvidia-smi >/dev/null; then
        GPUS_PER_NODE=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)  # nodes without GPU scheduling
    fi
    if [ "$GPUS_PER_NODE" -eq 0 ]; then
        export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu}
    fi
    PROCS_PER_NODE=${DPROPE_PROCS_PER_NODE:-$((GPUS_PER_NODE > 0 ? GPUS_PER_NODE : 1))}
    NUM_NODES=${SLURM_JOB_NUM_NODES:-1}
    CPUS_PER_PROC=$(((${SLURM_CPUS_ON_NODE:-1} / PROCS_PER_NODE) > 0 ? (${SLURM_CPUS_ON_NODE:-1} / PROCS_PER_NODE) : 1))
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    MASTER_PORT=${DPROPE_MASTER_PORT:-$((15000 + SLURM_JOB_ID % 15000))}
    export MASTER_ADDR MASTER_PORT
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$CPUS_PER_PROC}
}

# The srun command line that starts the processes of one run, as an array: STEP.
dprope_step() {
    local entry=$1
    shift
    # Explicit task counts: the job's SLURM_NTASKS would otherwise set srun's. Processes that
    # outlive the first to exit by 5 minutes are stopped (the others of a crashed run wait in a
    # collective); the ranks of a run that saved or exported leave together, after a barrier.
    local srun=(srun --nodes="$NUM_NODES" --kill-on-bad-exit=0 --wait=300)
    if [ "$((CPUS_PER_PROC * PROCS_PER_NODE))" -gt "${SLURM_CPUS_ON_NODE:-1}" ]; then
        srun+=(--overcommit)
    fi
    case "${DPROPE_LAUNCHER:-srun}" in
        srun)
            STEP=("${srun[@]}" --ntasks="$((NUM_NODES * PROCS_PER_NODE))" --ntasks-per-node="$PROCS_PER_NODE"
                --cpus-per-task="$CPUS_PER_PROC"
                "$PYTHON" "$DPROPE_ROOT/launch/$entry.py" "$@")
            ;;
        torchrun)
            dprope_torchrun "$entry" "$@"
            STEP=("${srun[@]}" --ntasks="$NUM_NODES" --ntasks-per-node=1
                --cpus-per-task="$((CPUS_PER_PROC * PROCS_PER_NODE))" "${TORCHRUN[@]}")
            ;;
        *)
            echo "error: DPROPE_LAUNCHER: must be srun or torchrun (got '$DPROPE_LAUNCHER')" >&2
            exit 2
            ;;
    esac
}

# The command every node runs with DPROPE_LAUNCHER=torchrun, as an array: TORCHRUN. The nodes run
# the same command; the c10d rendezvous at MASTER_ADDR:MASTER_PORT, keyed by the job id, numbers
# the nodes and their processes. torchrun passes USR1 on to its workers and waits for their
# checkpoint (shutdown timeout).
dprope_torchrun() {
    local entry=$1
    shift
    TORCHRUN=("$PYTHON" -m torch.distributed.run
        --nnodes="$NUM_NODES" --nproc-per-node="$PROCS_PER_NODE"
        --rdzv-backend=c10d --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --rdzv-id="$SLURM_JOB_ID"
        --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout=3600
        "$DPROPE_ROOT/launch/$entry.py" "$@")
}

# Start the step in the background, pass USR1/TERM on to it, and wait for it: a signal only
# reaches a batch script between commands, and with --signal=B:... only the script gets it.
# Sets STEP_STATUS (the step's exit code) and STOP_SIGNAL (the signal passed on, if any).
dprope_run_step() {
    STOP_SIGNAL=
    "${STEP[@]}" &
    local step_pid=$!
    trap 'STOP_SIGNAL=USR1; dprope_log "USR1: passing it on, the run saves a checkpoint"; kill -USR1 '"$step_pid"' 2>/dev/null' USR1
    trap 'STOP_SIGNAL=TERM; dprope_log "TERM: passing it on, the run saves a checkpoint"; kill -TERM '"$step_pid"' 2>/dev/null' TERM
    set +e
    wait "$step_pid"
    STEP_STATUS=$?
    while kill -0 "$step_pid" 2>/dev/null; do  # wait was interrupted by a trapped signal
        wait "$step_pid"
        STEP_STATUS=$?
    done
    set -e
    trap - USR1 TERM
}

dprope_header() {
    dprope_log "$1 on $NUM_NODES node(s) [$SLURM_JOB_NODELIST] x $PROCS_PER_NODE process(es)," \
        "$GPUS_PER_NODE GPU(s) per node, launcher ${DPROPE_LAUNCHER:-srun}, restart ${SLURM_RESTART_COUNT:-0}," \
        "rendezvous $MASTER_ADDR:$MASTER_PORT, python $PYTHON"
    local nccl
    nccl=$(env | grep -E '^(TORCH_)?NCCL_' | sort | tr '\n' ' ' || true)
    dprope_log "NCCL settings passed on: ${nccl:-none}"
}
