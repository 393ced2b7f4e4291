#!/usr/bin/env bash
# On a GPU machine, in one call: install, info, then the steps named (default: all of them)
#   conformance   python -m mglu conformance --device cuda
#   swiglu        scripts/swiglu_independent.py (cross-check of the bench's SwiGLU row)
#   paper|decode|prefill   python -m mglu bench --preset P, writing JSON and PNG
#   bwd|fwdbwd    the training modes at 4096x11008, 1/64/2048 tokens, 4 masks
#   train         issue #6's training rows: fwdbwd, 4096x11008, bf16, 4 masks, 2048 and 8192
#                 tokens, JSON in $OUT/bench_train.json
#   h100          the acceptance rows of issues #6-#8, one bench run a regime, JSON in $OUT/bench_h100_*.json:
#                 1 token (3 SPEC shapes, n_masks 1/2/4/8, fp16+bf16, every kernel backend, SwiGLU),
#                 16 and 64 tokens (2 shapes, n_masks 1/4), prefill (8192 tokens, 4096x14336, bf16,
#                 n_masks 1/4, triton and cuda), training (fwdbwd, 4096x11008, bf16, n_masks 4,
#                 2048 and 8192 tokens, triton and cuda against naive and naive+compile)
#   numbatorch    where numba and the torch backend cross (auto's order between them): forward,
#                 bf16, 4096x14336 and 4096x11008, 1-64 tokens, n_masks 1 and 4, JSON in
#                 $OUT/bench_numbatorch.json
#   hostloop      scripts/host_loop.py (graph replay vs eager loop of the public op)
#   numba8        issue #8's prefill and training rows: 2048 tokens, every kernel backend, bf16,
#                 n_masks 4 (fwd at 4096x14336, fwdbwd at 4096x11008), JSON in $OUT/bench_numba8_*.json
#   hostprof      the same script's --profile (host time per eager call, by function), triton and cuda
#   stream        scripts/stream_probe.py (the decode bytes alone: W and the bit-planes read, no
#                 arithmetic, beside the triton GEMV; do_bench and the bench timer), JSON in $OUT/stream.json
#   cudaprobe     scripts/cuda_host_probe.py (the cuda backend's host launch path, piece by piece)
#   decode1       issue #8's decode rows: 1 token, 4096x14336 and 4096x11008, n_masks 1 and 4,
#                 fp16 and bf16, every backend, JSON in $OUT/bench_decode1.json
#   eager         1 token, 4096x14336, n_masks 4, bf16: device rows and the public op's
#                 host-inclusive rows (bench --eager)
#   suite         the pytest-benchmark suite over the paper preset
#   conf:B[:quick]   python -m mglu conformance --backend B --device cuda [--quick]
#   confp:B[:quick]  the same, one process per dtype and third of the catalogue
#                    (--shard) in parallel, fp32 in sixths (triton's fp32 kernels compile
#                    slowest: a third did not finish in 290 s, run 11): compiles overlap
#   memcheck:B    compute-sanitizer --tool memcheck over the quick conformance of backend B
#   sanitize:B:TOOL:DTYPE   compute-sanitizer --tool TOOL (memcheck, racecheck) over the quick
#                 conformance of backend B in one dtype ($SANITIZE_TIMEOUT seconds at most)
#   tune[:PARTS]  scripts/triton_tune.py PARTS (comma list; default all), JSON in $OUT/tune.json
#   ntune[:VARIANTS]   scripts/numba_tune.py [--variants VARIANTS], JSON in $OUT/numba_tune.json
#   ctune         scripts/cuda_tune.py $CTUNE_ARGS, JSON in $OUT/cuda_tune.json
#   batched16     the 16-token rows of issues #6 and #7: 4096x14336 and 4096x11008, n_masks 1
#                 and 4, fp16 and bf16, triton and cuda, JSON in $OUT/bench_batched16.json
#   ncu[:SHAPE:N:DTYPE]  Nsight Compute over scripts/ncu_decode.py (the 1-token decode kernels
#                 of numba, cuda, triton; default 4096x11008:4:fp16), CSV in $OUT/ncu_decode.csv
#   ncuraw:SHAPE:N:DTYPE:TOKENS[:BACKENDS[:CUDA_VARIANTS]]  the same kernels at TOKENS tokens
#                 (the ring and triton's fwd_mma too; named cuda variants beside the defaults), every metric of the sections that say where the time goes
#                 (ncu's raw page), CSV in $OUT/ncu_raw_N_TOKENS.csv and the summary of RAW_METRICS
#   pytest        the test suite on the GPU (python -m pytest -q)
#   pytest:FILES  test files on the GPU (a comma list)
# Usage, from the repo root: bash scripts/device_check.sh [STEP ...]
# Set MGLU_GIT_COMMIT on the device: its copy carried the .git of the session's first commit
# under a newer tree (seen in runs 10-13), so git there names the wrong commit.
# Writes $OUT/run.log and $OUT/bench_P.{json,png} (./device-out without $OUT).
set -uo pipefail
steps=("$@")
[[ ${#steps[@]} -gt 0 ]] || steps=(conformance swiglu paper decode)
: "${MGLU_GIT_COMMIT:?set MGLU_GIT_COMMIT to the tree's commit (the device copy's .git is stale)}"
export MGLU_GIT_COMMIT
out=${OUT:-device-out}
log="$out/run.log"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
# the editable install left `import mglu` failing in scripts/*.py on the device (seen in
# three calls this session): the repo root goes on the path explicitly
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pip install -q -e . --no-deps --no-build-isolation >>"$log" 2>&1 || { cat "$log"; exit 1; }
{ echo "commit $MGLU_GIT_COMMIT"; date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; } 2>&1 | tee -a "$log"
python3 -m mglu info --dtype bfloat16 2>&1 | tee -a "$log"
status=0
for step in "${steps[@]}"; do
  start=$(date +%s)
  case $step in
    conformance) python3 -m mglu conformance --device cuda ;;
    swiglu) python3 scripts/swiglu_independent.py ;;
    paper|decode|prefill) python3 -m mglu bench --preset "$step" --json "$out/bench_$step.json" --plot "$out/bench_$step.png" ;;
    bwd|fwdbwd) python3 -m mglu bench --mode "$step" --shapes 4096x11008 --tokens 1,64,2048 --n-masks 4 ;;
    train) python3 -m mglu bench --mode fwdbwd --shapes 4096x11008 --tokens 2048,8192 --n-masks 4 --dtype bf16 \
      --backends triton --json "$out/bench_train.json" ;;
    h100) python3 -m mglu bench --shapes 4096x14336,4096x11008,8192x28672 --tokens 1 --n-masks 1,2,4,8 \
        --dtype fp16,bf16 --backends triton,cuda,numba --baselines swiglu --json "$out/bench_h100_decode.json" &&
      python3 -m mglu bench --shapes 4096x14336,4096x11008 --tokens 16,64 --n-masks 1,4 --dtype fp16,bf16 \
        --backends triton,cuda,numba --baselines swiglu --json "$out/bench_h100_batched.json" &&
      python3 -m mglu bench --shapes 4096x14336 --tokens 8192 --n-masks 1,4 --dtype bf16 \
        --backends triton,cuda --baselines swiglu --json "$out/bench_h100_prefill.json" &&
      python3 -m mglu bench --mode fwdbwd --shapes 4096x11008 --tokens 2048,8192 --n-masks 4 --dtype bf16 \
        --backends triton,cuda --baselines naive,naive+compile,swiglu --json "$out/bench_h100_train.json" ;;
    hostloop) python3 scripts/host_loop.py ;;
    numbatorch) python3 -m mglu bench --shapes 4096x14336,4096x11008 --tokens 1,2,4,8,16,64 --n-masks 1,4 \
      --dtype bf16 --backends torch,numba --baselines none --json "$out/bench_numbatorch.json" ;;
    numba8) python3 -m mglu bench --shapes 4096x14336 --tokens 2048 --n-masks 4 --dtype bf16 \
        --backends triton,cuda,numba --baselines swiglu --json "$out/bench_numba8_fwd.json" &&
      python3 -m mglu bench --mode fwdbwd --shapes 4096x11008 --tokens 2048 --n-masks 4 --dtype bf16 \
        --backends triton,cuda,numba --baselines naive,naive+compile --json "$out/bench_numba8_fwdbwd.json" ;;
    hostprof) python3 scripts/host_loop.py --profile --backends triton,cuda ;;
    ctune) python3 scripts/cuda_tune.py ${CTUNE_ARGS:-} --json "$out/cuda_tune.json" ;;
    batched16) python3 -m mglu bench --shapes 4096x14336,4096x11008 --tokens 16 --n-masks 1,4 --dtype fp16,bf16 \
      --backends triton,cuda --baselines swiglu --json "$out/bench_batched16.json" ;;
    cudaprobe) python3 scripts/cuda_host_probe.py ;;
    stream) python3 scripts/stream_probe.py --json "$out/stream.json" ;;
    decode1) python3 -m mglu bench --shapes 4096x14336,4096x11008 --tokens 1 --n-masks 1,4 --dtype fp16,bf16 \
      --baselines swiglu --json "$out/bench_decode1.json" ;;
    eager) python3 -m mglu bench --shapes 4096x14336 --tokens 1 --n-masks 4 --dtype bf16 --eager --baselines none ;;
    conf:*) b=${step#conf:}; python3 -m mglu conformance --device cuda --backend "${b%%:*}" $([[ $b == *:quick ]] && echo --quick) ;;
    confp:*) b=${step#confp:}; q=$([[ $b == *:quick ]] && echo --quick)
      for d in float64 float32 float16 bfloat16; do
        k=$([[ $d == float32 ]] && echo 6 || echo 3)
        for s in $(seq 1 $k); do
          python3 -m mglu conformance --device cuda --backend "${b%%:*}" --dtype $d --shard $s/$k $q \
            >"/tmp/conf_${b%%:*}_${d}_$s.log" 2>&1 &
        done
      done; wait; cat /tmp/conf_${b%%:*}_*.log
      ! grep -qE "[1-9][0-9]* failed|Traceback" /tmp/conf_${b%%:*}_*.log ;;
    sanitize:*) IFS=: read -r _ b tool d <<<"$step"
      timeout "${SANITIZE_TIMEOUT:-600}" compute-sanitizer --tool "$tool" --print-limit 20 --error-exitcode 3 \
        python3 -m mglu conformance --device cuda --quick --backend "$b" --dtype "$d" ;;
    memcheck:*) compute-sanitizer --tool memcheck --print-limit 20 python3 -m mglu conformance --device cuda --quick --backend "${step#memcheck:}" ;;
    tune*) parts=${step#tune}; python3 scripts/triton_tune.py $(tr , " " <<<"${parts#:}") --json "$out/tune.json" ;;
    ntune*) v=${step#ntune}; python3 scripts/numba_tune.py ${v:+--variants ${v#:}} --budget 330 \
      --json "$out/numba_tune.json" ;;
    # before ncu*, which would take ncuraw:* too (run 83 lost its profile so)
    ncuraw:*) IFS=: read -r _ shape n dt tk be cv <<<"$step"
      ncu --csv --page raw -k regex:"decode_wide|mglu_rowdot|fwd_gemv|fwd_mma|fwd_wgmma" --section SpeedOfLight \
        --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section Occupancy \
        --section SchedulerStats --section WarpStateStats --section InstructionStats --section LaunchStats \
        python3 scripts/ncu_decode.py --shape "$shape" --n-masks "$n" --dtype "$dt" --tokens "$tk" \
        --backends "${be:-cuda,triton}" --cuda-variants "${cv:-}" >"$out/ncu_raw_${n}_$tk.csv" \
        && python3 scripts/ncu_decode.py --summarize-raw "$out/ncu_raw_${n}_$tk.csv" ;;
    ncu*) IFS=: read -r _ shape n dt <<<"$step"
      ncu --csv --page details -k regex:"decode_wide|mglu_rowdot_gemv|fwd_gemv" --section SpeedOfLight \
        --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
        python3 scripts/ncu_decode.py --shape "${shape:-4096x11008}" --n-masks "${n:-4}" --dtype "${dt:-fp16}" \
        >"$out/ncu_decode.csv" && python3 scripts/ncu_decode.py --summarize "$out/ncu_decode.csv" ;;
    pytest) python3 -m pytest -q -x -p no:cacheprovider ;;
    pytest:*) files=${step#pytest:}; python3 -m pytest -q -p no:cacheprovider ${files//,/ } ;;
    suite) MGLU_BENCH_PRESET=paper python3 -m pytest benchmarks -q -p no:cacheprovider --benchmark-columns=median,iqr ;;
    *) echo "unknown step $step"; false ;;
  esac 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  status=$(( status | rc ))
  echo "step $step: exit $rc, $(( $(date +%s) - start )) s" | tee -a "$log"
done
exit $status
