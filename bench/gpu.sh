#!/usr/bin/env bash
# bench/gpu.sh: the GPU run in one shot, for a machine with an NVIDIA GPU, sized for one call of under
# 10 minutes (an H100/H200 machine: compute capability 9.0, 16 cores).
#
#   1. builds node-llama-cpp's CUDA binding from the llama.cpp source its npm package carries
#      (llama/gitRelease.bundle; nothing is downloaded), for one GPU architecture only (sm_90 by default);
#   2. builds llama-bench and llama-server with CUDA from the same source (bench/peers/build-cuda);
#   3. runs the bench sections with every layer on the GPU (the daemons' gpu_layers "auto", -ngl 999 for
#      llama.cpp's tools), and writes everything under $OUT (default bench/results/gpu-<time>): the build
#      logs, nvidia-smi, the bench's JSON and Markdown, and timings.txt.
#
# Needs node_modules installed (the machine may have no registry), cmake, ninja or make, a C++ compiler and
# the CUDA toolkit (nvcc). Options:
#   --cpu           skip CUDA: the CPU peers (npm run bench:peers) and the daemons with --gpu off; to test the
#                   script on a machine without a GPU
#   --arch N        CUDA architecture (default 90)
#   --only LIST     bench sections (default pp-tg,e2e,status,first-load,prompt-cache)
#   --reps N        (default 3)   --threads N (default 1: the GPU does the work)   --model NAME (default small-q8)
#   --budget S      seconds the whole run may take (default 560); the bench gets what the builds left
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CPU=0 ARCH=90 ONLY="pp-tg,e2e,status,first-load,prompt-cache" REPS=3 THREADS=1 MODEL=small-q8 BUDGET=560
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cpu) CPU=1 ;;
    --arch) ARCH=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --threads) THREADS=$2; shift ;;
    --model) MODEL=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    *) echo "bench/gpu.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

START=$(date +%s)
OUT=${OUT:-$ROOT/bench/results/gpu-$(date -u +%Y-%m-%dT%H-%M-%S)}
mkdir -p "$OUT"
JOBS=$(nproc)
log() { echo "[gpu.sh +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/timings.txt"; }
elapsed() { echo $(( $(date +%s) - START )); }

log "start: $JOBS cores, node $(node --version), $( [[ $CPU == 1 ]] && echo "CPU path (--cpu)" || echo "CUDA sm_$ARCH")"
if command -v nvidia-smi >/dev/null; then nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true; else echo "no nvidia-smi" > "$OUT/nvidia-smi.txt"; fi
[[ -d node_modules/node-llama-cpp ]] || { echo "node_modules is missing: run npm ci first (or carry it)" >&2; exit 1; }

if [[ $CPU == 0 ]]; then
  command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit or run with --cpu" >&2; exit 1; }
  # node-llama-cpp reads NODE_LLAMA_CPP_CMAKE_OPTION_* both when it builds and in getLlama, which finds the
  # local build by these options: exported for the whole run, so the daemons' engine processes find it too.
  # The CPU kernels as the daemon asks for them (src/engine/sourceBuild.ts: native, or AVX-512 without AMX).
  eval "$(node --import tsx -e 'import("./src/engine/sourceBuild.ts").then(({ sourceBuildOptions }) => { for (const [k, v] of Object.entries(sourceBuildOptions().cmake)) console.log(`export NODE_LLAMA_CPP_CMAKE_OPTION_${k}=${v}`); })')"
  PEER_CPU_FLAGS=$(node --import tsx -e 'import("./bench/peers.ts").then(({ peerCpuFlags }) => console.log(peerCpuFlags().cmake.join(" ")))')
  export NODE_LLAMA_CPP_CMAKE_OPTION_CMAKE_CUDA_ARCHITECTURES=$ARCH
  export CMAKE_BUILD_PARALLEL_LEVEL=$JOBS
  env | grep '^NODE_LLAMA_CPP_CMAKE_OPTION_' > "$OUT/cmake-options.txt" || true
  log "building node-llama-cpp's CUDA binding (sm_$ARCH) ..."
  npx --no node-llama-cpp source download --gpu cuda --noUsageExample > "$OUT/build-binding.log" 2>&1 \
    || { log "binding build failed (see build-binding.log)"; exit 1; }
  log "binding built"

  SRC=bench/peers/src
  if [[ ! -f $SRC/CMakeLists.txt ]]; then
    rm -rf "$SRC"
    git clone --quiet node_modules/node-llama-cpp/llama/gitRelease.bundle "$SRC"
  fi
  GEN=$(command -v ninja >/dev/null && echo Ninja || echo "Unix Makefiles")
  log "building llama-bench and llama-server with CUDA (sm_$ARCH) ..."
  {
    cmake -S "$SRC" -B bench/peers/build-cuda -G "$GEN" -DCMAKE_BUILD_TYPE=Release \
      -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$ARCH" $PEER_CPU_FLAGS -DLLAMA_CURL=OFF \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON
    cmake --build bench/peers/build-cuda --target llama-bench llama-server -j "$JOBS"
  } > "$OUT/build-peers.log" 2>&1 || { log "peers build failed (see build-peers.log)"; exit 1; }
  export LLAMA_CPP_BIN=$ROOT/bench/peers/build-cuda/bin
  log "peers built"
  GPU=auto
else
  if [[ -z ${LLAMA_CPP_BIN:-} && ! -x bench/peers/build/bin/llama-server ]]; then
    log "building the CPU peers ..."
    npx --no tsx bench/peers.ts > "$OUT/build-peers.log" 2>&1
  fi
  GPU=off
fi

LEFT=$(( BUDGET - $(elapsed) ))
if (( LEFT < 60 )); then log "only ${LEFT}s left of the ${BUDGET}s budget: no bench"; exit 1; fi
log "bench: --only $ONLY --reps $REPS --threads $THREADS --gpu $GPU (${LEFT}s left)"
set +e
timeout --kill-after=10 "$LEFT" npx --no tsx bench/run.ts --model "$MODEL" --threads "$THREADS" --reps "$REPS" --gpu "$GPU" --only "$ONLY" --out "$OUT" > "$OUT/bench.log" 2>&1
RC=$?
set -e
log "bench exit code $RC"
tail -n 60 "$OUT/bench.log"
exit $RC
