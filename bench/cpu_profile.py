"""Operator profile of one default-model call on DL19's first query at N=100 (CPU): where the time goes.
Usage: python bench/cpu_profile.py
"""

import time

from torch.profiler import ProfilerActivity, profile

from blockrank_rerank import BlockRank
from blockrank_rerank.evaluation.data import load_trec_dl

run = load_trec_dl("dl19")
qid = sorted(run.candidates)[0]
texts = [c.text for c in run.candidates[qid][:100]]
r = BlockRank.from_pretrained()
layout = r.engine.layout(run.queries[qid], texts)
print(r.config.dtype, r.engine.backend, layout.num_tokens)
r.engine.score_layout(layout)
t = time.perf_counter()
r.engine.score_layout(layout)
print("s", time.perf_counter() - t)

with profile(activities=[ProfilerActivity.CPU]) as p:
    r.engine.score_layout(layout)
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))
