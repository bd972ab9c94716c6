"""Operator profile of one default-model call on DL19's first query (CPU): where the time goes.
Usage: python bench/cpu_profile.py [--dtype float32|bfloat16-mixed|auto] [--n 100] [--rows 18]
"""

import argparse
import time

from torch.profiler import ProfilerActivity, profile

from blockrank_rerank import BlockRank
from blockrank_rerank.evaluation.data import load_trec_dl

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--dtype", default="auto")
parser.add_argument("--n", type=int, default=100)
parser.add_argument("--rows", type=int, default=18)
args = parser.parse_args()

run = load_trec_dl("dl19")
qid = sorted(run.candidates)[0]
texts = [c.text for c in run.candidates[qid][: args.n]]
r = BlockRank.from_pretrained(dtype=args.dtype)
layout = r.engine.layout(run.queries[qid], texts)
print(r.config.dtype, r.engine.backend, layout.num_tokens)
r.engine.score_layout(layout)
t = time.perf_counter()
r.engine.score_layout(layout)
print("s", time.perf_counter() - t)

with profile(activities=[ProfilerActivity.CPU]) as p:
    r.engine.score_layout(layout)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
