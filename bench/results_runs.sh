#!/usr/bin/env bash
# Runs every evaluation behind docs/results.md (resumable: finished queries in runs/*/per_query.jsonl are kept).
# Usage: bash bench/results_runs.sh [phase ...]   phases: sweep dl19 scifact baselines (default: all, in that order)
# Per-query outputs go to runs/ (git-ignored); each summary is copied to docs/results/ for bench/make_results.py.
set -euo pipefail
cd "$(dirname "$0")/.."
BLOCKRANK=${BLOCKRANK:-.venv/bin/blockrank}
SCIFACT_QUERIES=${SCIFACT_QUERIES:-50}   # fixed random subset (seed 0) of the 300 SciFact test queries
mkdir -p docs/results runs

evaluate() {  # name, then eval arguments
  local name=$1; shift
  "$BLOCKRANK" eval --no-progress --output "runs/$name" "$@"
  cp "runs/$name/summary.json" "docs/results/$name.json"
}

phase_sweep() {
  "$BLOCKRANK" sweep-layers --no-progress --dataset dl21 --depth 20 --output docs/results/sweep-dl21-top20.json
}

phase_dl19() {
  evaluate dl19-first-stage-top100 --dataset dl19 --depth 100 --method first-stage
  evaluate dl19-blockrank-top100 --dataset dl19 --depth 100 --method blockrank
  evaluate dl19-icr-top100 --dataset dl19 --depth 100 --method icr
}

phase_scifact() {
  evaluate scifact-first-stage-top100 --dataset scifact --depth 100 --method first-stage
  evaluate scifact-first-stage-top20-q$SCIFACT_QUERIES --dataset scifact --depth 20 --queries "$SCIFACT_QUERIES" --method first-stage
  evaluate scifact-blockrank-top20-q$SCIFACT_QUERIES --dataset scifact --depth 20 --queries "$SCIFACT_QUERIES" --method blockrank
  evaluate scifact-icr-top20-q$SCIFACT_QUERIES --dataset scifact --depth 20 --queries "$SCIFACT_QUERIES" --method icr
}

phase_baselines() {
  evaluate dl19-biencoder-top100 --dataset dl19 --depth 100 --method biencoder
  evaluate scifact-biencoder-top100 --dataset scifact --depth 100 --method biencoder
  evaluate scifact-biencoder-top20-q$SCIFACT_QUERIES --dataset scifact --depth 20 --queries "$SCIFACT_QUERIES" --method biencoder
  evaluate dl19-pointwise-top100 --dataset dl19 --depth 100 --method pointwise
  evaluate dl19-first-stage-top20 --dataset dl19 --depth 20 --method first-stage
  evaluate dl19-listwise-top20 --dataset dl19 --depth 20 --method listwise
  evaluate scifact-pointwise-top20-q$SCIFACT_QUERIES --dataset scifact --depth 20 --queries "$SCIFACT_QUERIES" --method pointwise
  evaluate scifact-listwise-top20-q$SCIFACT_QUERIES --dataset scifact --depth 20 --queries "$SCIFACT_QUERIES" --method listwise
}

phases=("$@")
[ ${#phases[@]} -eq 0 ] && phases=(sweep dl19 scifact baselines)
for phase in "${phases[@]}"; do
  echo "== $phase $(date -u +%H:%M:%S)"
  "phase_$phase"
done
echo "== done $(date -u +%H:%M:%S)"
