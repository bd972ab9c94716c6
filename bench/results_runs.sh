#!/usr/bin/env bash
# Runs every evaluation behind docs/results.md, then `python bench/make_results.py` renders the report.
# Resumable: finished queries in runs/*/per_query.jsonl are kept, so a rerun only does what is missing.
# Usage: bash bench/results_runs.sh [phase ...]   phases: sweep dl19 scifact baselines baselines_full extra trained untrained
#        icr_full icr_default slow_top100 subsets_top100 history (and, on demand: scifact_biencoder trained_partial
#        icr_default_partial dev_choice fusion precision split)
# (default: all, in that order)
# Per-query outputs go to runs/ (git-ignored); each summary is copied to docs/results/ for bench/make_results.py.
# Sizes are chosen for a shared 2-core CPU: SciFact and the decoding baselines run on fixed seeded subsets.
# The committed summaries came from: `results_runs.sh sweep dl19`; `OMP_NUM_THREADS=1 results_runs.sh scifact`; `OMP_NUM_THREADS=1 results_runs.sh baselines`; `results_runs.sh baselines_full` (stopped
# when the session's time ran out; only finished runs have summaries); the SciFact BM25 top-100 line of `extra`;
# `results_runs.sh untrained trained` (2 threads, beside other jobs; the 300-query SciFact run spanned two sessions:
# rerunning `trained` resumes it); `results_runs.sh icr_default` (2 threads; a run stopped by a session's end is
# summarised by `ICR_DONE=K results_runs.sh icr_default_partial` and resumes on a rerun);
# `OMP_NUM_THREADS=1 results_runs.sh scifact_biencoder` (beside icr_default; document embeddings cached across queries);
# the `history` summaries came from the same commands in earlier sessions, partly on a lent H100 (their
# "device" field says cuda; summaries count queries per device). Run directories remember their settings
# (identity.json) and refuse to resume with other ones.
set -euo pipefail
cd "$(dirname "$0")/.."
BLOCKRANK=${BLOCKRANK:-.venv/bin/blockrank}
SQ=${SCIFACT_QUERIES:-20}   # fixed random subset (seed 0) of the 300 SciFact test queries
LQ=${LISTWISE_QUERIES:-10}  # fixed random subset (seed 0) for the slow baselines (decoding, full attention)
TQ=${TRAINED_QUERIES:-20}   # the first TQ SciFact test query ids (sorted) for the trained-vs-untrained top-100 runs
# The phases up to `extra` ran before the trained default existed, with the untrained base and the query block at
# 16384; OLD states those settings so that rerunning them reproduces the committed summaries.
OLD="--model embedded:smollm2-135m-instruct --query-position-offset 16384"
mkdir -p docs/results runs

evaluate() {  # name, then eval arguments
  local name=$1; shift
  "$BLOCKRANK" eval --no-progress --output "runs/$name" "$@"
  cp "runs/$name/summary.json" "docs/results/$name.json"
}

phase_sweep() {
  [ -f docs/results/sweep-dl21-top20.json ] || \
    "$BLOCKRANK" sweep-layers --no-progress --dataset dl21 --depth 20 --output docs/results/sweep-dl21-top20.json $OLD
}

phase_dl19() {
  evaluate dl19-first-stage-top100 --dataset dl19 --depth 100 --method first-stage
  evaluate dl19-blockrank-top100 --dataset dl19 --depth 100 --method blockrank $OLD
  evaluate dl19-icr-top100 --dataset dl19 --depth 100 --method icr $OLD
  evaluate dl19-biencoder-top100 --dataset dl19 --depth 100 --method biencoder
}

phase_scifact() {
  for method in first-stage blockrank icr biencoder; do
    evaluate scifact-$method-top20-q$SQ --dataset scifact --depth 20 --queries "$SQ" --method $method $OLD
  done
}

phase_baselines() {
  for method in first-stage blockrank icr biencoder pointwise listwise; do
    evaluate dl19-$method-top20-q$LQ --dataset dl19 --depth 20 --queries "$LQ" --method $method $OLD
  done
}

phase_baselines_full() {
  for method in first-stage biencoder pointwise; do
    evaluate dl19-$method-top20 --dataset dl19 --depth 20 --method $method $OLD
  done
  evaluate scifact-pointwise-top20-q$SQ --dataset scifact --depth 20 --queries "$SQ" --method pointwise $OLD
}

phase_scifact_biencoder() {  # the independent reference over all 300 SciFact test queries
  evaluate scifact-biencoder-top100 --dataset scifact --depth 100 --method biencoder --cache-document-embeddings
}

phase_extra() {
  evaluate scifact-first-stage-top100 --dataset scifact --depth 100 --method first-stage
  phase_scifact_biencoder
  evaluate scifact-listwise-top20-q$LQ --dataset scifact --depth 20 --queries "$LQ" --method listwise $OLD
}

T=embedded:smollm2-135m-blockrank  # the shipped BlockRank adapter, read at its own settings (blocks of 160, query at 16384)
U=embedded:smollm2-135m-instruct   # the untrained base

subset_of() {  # name, finished run, eval arguments: summarise a subset of a finished run without recomputing it
  local name=$1 source=$2; shift 2
  mkdir -p "runs/$name"
  cp "runs/$source/per_query.jsonl" "runs/$name/"
  [ -f "runs/$source/identity.json" ] && cp "runs/$source/identity.json" "runs/$name/"  # the same settings: resumes silently
  local threads  # the summary records the thread count the source run's queries were timed with
  threads=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['settings'].get('torch_threads', ''))" "runs/$source/summary.json" 2>/dev/null || true)
  OMP_NUM_THREADS=${threads:-${OMP_NUM_THREADS:-}} evaluate "$name" "$@"
}

phase_trained() {  # docs/training.md: the adapter on the reporting sets (longest first)
  evaluate scifact-trained-top100 --dataset scifact --depth 100 --model $T
  subset_of scifact-trained-top100-first$TQ scifact-trained-top100 --dataset scifact --depth 100 --queries "$TQ" --first-queries --model $T
  evaluate dl19-trained-top100 --dataset dl19 --depth 100 --model $T
  evaluate dl19-trained-top20 --dataset dl19 --depth 20 --model $T
  evaluate scifact-trained-top20-q20 --dataset scifact --depth 20 --queries 20 --model $T
  evaluate scifact-trained-top20 --dataset scifact --depth 20 --model $T  # committed: from bench/gpu_quality_run.sh (H200)
}

partial_of() {  # unfinished SciFact top-100 run, K, eval arguments: summarise its first K queries (it runs in sorted order)
  local source=$1 k=$2; shift 2
  subset_of "$source-first$k" "$source" --dataset scifact --depth 100 --queries "$k" --first-queries "$@"
}

phase_trained_partial() {  # TRAINED_DONE=K
  partial_of scifact-trained-top100 "${TRAINED_DONE:?set TRAINED_DONE to the number of queries the run has finished}" --model $T
}

phase_icr_default() {  # ICR mode of the embedded default (the shipped adapter at its own settings), DL19 first
  evaluate dl19-icr-trained-top100 --dataset dl19 --depth 100 --method icr --model $T
  evaluate scifact-icr-trained-top100 --dataset scifact --depth 100 --method icr --model $T
}

phase_icr_default_partial() {  # ICR_DONE=K
  partial_of scifact-icr-trained-top100 "${ICR_DONE:?set ICR_DONE to the number of queries the run has finished}" --method icr --model $T
}

phase_untrained() {  # the untrained base at the default placement (query block right after the longest block)
  evaluate dl19-blockrank-top20 --dataset dl19 --depth 20 --model $U
  evaluate dl19-icr-top20 --dataset dl19 --depth 20 --method icr --model $U
  evaluate scifact-blockrank-top100-first$TQ --dataset scifact --depth 100 --queries "$TQ" --first-queries --model $U
  evaluate scifact-icr-top100-first$TQ --dataset scifact --depth 100 --queries "$TQ" --first-queries --method icr --model $U
}

phase_icr_full() {  # ICR (untrained base) over all 300 SciFact test queries; resumes from the first-TQ run
  mkdir -p runs/scifact-icr-top100
  if [ ! -s runs/scifact-icr-top100/per_query.jsonl ] && [ -s "runs/scifact-icr-top100-first$TQ/per_query.jsonl" ]; then
    cp "runs/scifact-icr-top100-first$TQ/per_query.jsonl" runs/scifact-icr-top100/
  fi
  evaluate scifact-icr-top100 --dataset scifact --depth 100 --method icr --model $U
}

phase_slow_top100() {  # the slower modes at top-100 on a fixed seeded subset: decoding baselines (base model), full attention
  for dataset in dl19 scifact; do
    evaluate $dataset-pointwise-top100-q$LQ --dataset $dataset --depth 100 --queries "$LQ" --method pointwise --model $U
  done
  evaluate dl19-full-trained-top100-q$LQ --dataset dl19 --depth 100 --queries "$LQ" --method full --model $T
  evaluate dl19-listwise-top100-q$LQ --dataset dl19 --depth 100 --queries "$LQ" --method listwise --model $U
  evaluate scifact-full-trained-top100-q$LQ --dataset scifact --depth 100 --queries "$LQ" --method full --model $T
  evaluate scifact-listwise-top100-q$LQ --dataset scifact --depth 100 --queries "$LQ" --method listwise --model $U
}

phase_subsets_top100() {  # the finished all-query top-100 runs on slow_top100's seeded subsets, for a like-for-like table
  subset_of dl19-trained-top100-q$LQ dl19-trained-top100 --dataset dl19 --depth 100 --queries "$LQ" --model $T
  subset_of dl19-icr-trained-top100-q$LQ dl19-icr-trained-top100 --dataset dl19 --depth 100 --queries "$LQ" --method icr --model $T
  evaluate dl19-biencoder-top100-q$LQ --dataset dl19 --depth 100 --queries "$LQ" --method biencoder  # cheap: rerun
  evaluate scifact-biencoder-top100-q$LQ --dataset scifact --depth 100 --queries "$LQ" --method biencoder
  subset_of scifact-trained-top100-q$LQ scifact-trained-top100 --dataset scifact --depth 100 --queries "$LQ" --model $T
}

phase_history() {  # earlier settings kept for comparison: the base with the query at 16384, the adapter with blocks of 384
  local O="--model $U --query-position-offset 16384"
  evaluate dl19-blockrank-top20-offset16384 --dataset dl19 --depth 20 $O
  evaluate dl19-icr-top20-offset16384 --dataset dl19 --depth 20 --method icr $O
  evaluate scifact-blockrank-top100-first$TQ-offset16384 --dataset scifact --depth 100 --queries "$TQ" --first-queries $O
  evaluate scifact-icr-top100-first$TQ-offset16384 --dataset scifact --depth 100 --queries "$TQ" --first-queries --method icr $O
  evaluate scifact-trained-top100-first$TQ-blocks384 --dataset scifact --depth 100 --queries "$TQ" --first-queries --model $T --max-block-tokens 384
  evaluate dl19-trained-top100-blocks384 --dataset dl19 --depth 100 --model $T --max-block-tokens 384
  evaluate dl19-trained-top20-blocks384 --dataset dl19 --depth 20 --model $T --max-block-tokens 384
  evaluate scifact-trained-top20-q20-blocks384 --dataset scifact --depth 20 --queries 20 --model $T --max-block-tokens 384
}

phase_dev_choice() {  # issue 17: head selection and input_order_weight chosen on dev data only (dl21, scifact-dev)
  "$BLOCKRANK" select-heads --no-progress --datasets dl21,scifact-dev --run-dir runs/heads-smollm2-top100 \
    --max-minutes "${DEV_MINUTES:-40}"
  cp runs/heads-smollm2-top100/selection.json docs/results/dev-selection-smollm2-top100.json
}

phase_fusion() {  # the default model fused with BM25's order at the weight chosen on dev (phase dev_choice)
  local w
  w=$(python3 -c "import json; print(json.load(open('docs/results/dev-selection-smollm2-top100.json'))['fusion']['input_order_weight'])")
  evaluate dl19-trained-fused-top100 --dataset dl19 --depth 100 --input-order-weight "$w"
  evaluate scifact-trained-fused-top100 --dataset scifact --depth 100 --input-order-weight "$w"
}

phase_precision() {  # issue 18's quality gate: bfloat16-mixed against the fp32 summaries of the same model
  evaluate dl19-trained-bf16mixed-top100 --dataset dl19 --depth 100 --dtype bfloat16-mixed
  evaluate scifact-trained-bf16mixed-top100 --dataset scifact --depth 100 --dtype bfloat16-mixed
}

phase_split() {  # issue 19: long documents split into blocks vs truncated; the split aggregate chosen on scifact-dev
  local dq=${SPLIT_DEV_QUERIES:-10} tq=${SPLIT_TEST_QUERIES:-20} how
  [ -f docs/results/split-choice-scifact-dev.json ] || .venv/bin/python bench/split_choice.py --queries "$dq"
  how=$(python3 -c "import json; print(json.load(open('docs/results/split-choice-scifact-dev.json'))['chosen'])")
  evaluate scifact-trained-split-top100-q"$tq" --dataset scifact --depth 100 --queries "$tq" --long-documents split --split-scores "$how"
  evaluate scifact-trained-top100-q"$tq" --dataset scifact --depth 100 --queries "$tq"
}

phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(sweep dl19 scifact baselines baselines_full extra trained untrained icr_full icr_default slow_top100 subsets_top100 history)
for phase in "${phases[@]}"; do
  echo "== $phase $(date -u +%H:%M:%S)"
  "phase_$phase"
done
echo "== done $(date -u +%H:%M:%S)"
