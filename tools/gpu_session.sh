#!/usr/bin/env bash
# One device call's worth of GPU checks, from a bundle made by tools/gpu_bundle.sh, in priority
# order and each phase bounded in time so that the whole fits one call with room to rerun:
#   tests      the gpu tests (tools/gpu_run.sh --tests, MOE_DEBUG_SYNC=1), cuDNN attention's included
#   sanitizer  compute-sanitizer memcheck + racecheck on a subset (gpu_run.sh --sanitizer)
#   attention  native attention kernels against cuDNN's fused attention (gpu_run.sh --attention)
#   bench      moebench with the PyTorch peer on the same GPU (gpu_run.sh --bench)
#   apps       moetrain / moeeval / moeinfer end to end, cuda against the CPU backend
#              (gpu_run.sh --apps; run from the repository root: it reads configs/ and data/)
#   gridc      the replication study's Grid C on the GPU (gpu_run.sh --gridc; repository root)
# Each phase's folder is packed into OUT/PHASE.tgz as soon as the phase ends: a device call brings
# back a handful of files, and a phase cut short by its limit still leaves what it wrote.
#
# Usage: tools/gpu_session.sh BUNDLE_DIR OUT [PHASES (default: tests sanitizer attention bench)]
# Env (seconds): LIMIT_TESTS 200, LIMIT_SANITIZER 210, LIMIT_ATTENTION 120, LIMIT_BENCH 150,
#   LIMIT_APPS 300, LIMIT_GRIDC 300;
#   PRESETS (bench presets, default small), SEQS (attention lengths, default 256,1024,4096),
#   SKIP_MOEBENCH (attention phase without the moebench 0.4b pair, default 1).
# Example, on the device machine from the repository root, with the bundle carried in gpubundle/:
#   bash tools/gpu_session.sh gpubundle "$OUT"
set -uo pipefail
BUNDLE=${1:?usage: tools/gpu_session.sh BUNDLE_DIR OUT [PHASES]}
OUT=${2:?usage: tools/gpu_session.sh BUNDLE_DIR OUT [PHASES]}
PHASES=${3:-tests sanitizer attention bench}
WORK=$(mktemp -d /tmp/gpu_session.XXXXXX)
mkdir -p "$OUT"
FAILED=0
for phase in $PHASES; do
  t0=$(date +%s)
  case "$phase" in
    tests)
      MOE_DEBUG_SYNC=${MOE_DEBUG_SYNC:-1} TEST_TIMEOUT=${TEST_TIMEOUT:-120} timeout "${LIMIT_TESTS:-200}" \
        bash "$BUNDLE/run.sh" "$WORK/tests" --tests ;;
    sanitizer)
      SAN_TIMEOUT=${SAN_TIMEOUT:-40} timeout "${LIMIT_SANITIZER:-210}" \
        bash "$BUNDLE/run.sh" "$WORK/sanitizer" --sanitizer ;;
    attention)
      SEQS=${SEQS:-256,1024,4096} SKIP_MOEBENCH=${SKIP_MOEBENCH:-1} \
        ATTN_TIMEOUT=$(( ${LIMIT_ATTENTION:-120} - 5 )) timeout "${LIMIT_ATTENTION:-120}" \
        bash "$BUNDLE/run.sh" "$WORK/attention" --attention ;;
    bench)
      PRESETS=${PRESETS:-small} BENCH_TIMEOUT=${BENCH_TIMEOUT:-45} timeout "${LIMIT_BENCH:-150}" \
        bash "$BUNDLE/run.sh" "$WORK/bench" --bench ;;
    apps)
      timeout "${LIMIT_APPS:-300}" bash "$BUNDLE/run.sh" "$WORK/apps" --apps ;;
    gridc)
      GRIDC_TIMEOUT=$(( ${LIMIT_GRIDC:-300} - 20 )) timeout "${LIMIT_GRIDC:-300}" \
        bash "$BUNDLE/run.sh" "$WORK/gridc" --gridc ;;
    *) echo "gpu_session: unknown phase '$phase' (tests, sanitizer, attention, bench, apps, gridc)" >&2
       exit 2 ;;
  esac
  rc=$?
  [ $rc -ne 0 ] && FAILED=1
  echo "gpu_session: phase $phase rc=$rc seconds=$(( $(date +%s) - t0 ))" | tee -a "$WORK/phases.txt"
  [ -d "$WORK/$phase" ] && tar czf "$OUT/$phase.tgz" -C "$WORK" "$phase"
  cp "$WORK/phases.txt" "$OUT/phases.txt"
done
exit $FAILED
