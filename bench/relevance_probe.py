"""Dev probe for a list-independent relevance score (issue 19), DL21 only: per document, at N = 5/20/50/100,
its share and mean_{heads, signal tokens}(lse_doc - lse_prefix) at L*; prints how far each moves across N.
Usage: python bench/relevance_probe.py NUM_QUERIES   (the 2026-12-04 note used 6)
"""

import statistics
import sys
import torch
from blockrank_rerank import BlockRank
from blockrank_rerank.evaluation.data import load_trec_dl
from blockrank_rerank.forward import PackedStream, decoder_of, run_layers, project
from blockrank_rerank.scoring import document_log_mass

r = BlockRank.from_pretrained()
e = r.engine
run = load_trec_dl("dl21")
qids = sorted(run.candidates)[: int(sys.argv[1])]


def probe(query, texts):
    layout = e.layout(query, texts)
    plan = e.attention_plan(layout)
    dec = decoder_of(e.model)
    out = {}

    def visit(i, layer, stream):
        if i == e.scoring_layer:
            q, k = stream.scoring_projections(layer, 2)
            attn = layer.self_attn
            P = layout.prefix_length
            x = layer.input_layernorm(stream.hidden[:P])
            kp = project(attn, x, "k_proj", "k_norm", stream.cos[:P], stream.sin[:P])
            _, owner = layout.document_rows()
            scale = float(attn.scaling)
            lse = document_log_mass(q, k, owner, layout.num_documents, scale)  # (H,S,N)
            g = q.shape[0] // kp.shape[0]
            lp = ((q.float() @ kp.float().repeat_interleave(g, 0).transpose(1, 2)) * scale).logsumexp(-1)  # (H,S)
            shares = (lse - lse.logsumexp(-1, keepdim=True)).exp().mean((0, 1))
            out["shares"] = shares
            out["rel"] = (lse - lp[..., None]).mean((0, 1))

    with torch.inference_mode():
        run_layers(dec, PackedStream.start(dec, plan, e.backend), e.scoring_layer, visit)
    return out["shares"], out["rel"]


share_moves, rel_moves, rows = [], [], []
for qid in qids:
    texts = [c.text for c in run.candidates[qid]]
    per_n = {n: probe(run.queries[qid], texts[:n]) for n in (5, 20, 50, 100)}
    for d in range(5):
        s = [float(per_n[n][0][d]) for n in per_n]
        rl = [float(per_n[n][1][d]) for n in per_n]
        sig = [1 / (1 + 2.718281828 ** (-x)) for x in rl]
        share_moves.append(max(s) / min(s))
        rel_moves.append(max(sig) - min(sig))
        rows.append((qid, d, s, rl))
    print(qid, "done", flush=True)
print("median share ratio max/min", statistics.median(share_moves))
print("median sigmoid(rel) spread", statistics.median(rel_moves))
for row in rows[:10]:
    print(row[0], row[1], [round(x, 4) for x in row[2]], [round(x, 2) for x in row[3]])
