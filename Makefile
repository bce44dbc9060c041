# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# The viewer's browser test drives Debian's Chromium (no browser downloads).
CHROMIUM ?= /usr/bin/chromium

.PHONY: install run test lint bench-retrieval bench-latency eval-live test-live

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/pip install --quiet "$(TORCH_SPEC)" 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/pip install --quiet -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
	$(BIN)/python -c "import app, tools, planner, torch, sentence_transformers, pgserver, swagger_ui_bundle"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/python -m app serve

$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "The viewer test needs Chromium: sudo apt-get install chromium (or set CHROMIUM=path)"; exit 1; \
	fi

test: install $(CHROMIUM)
	$(BIN)/ruff check app tools planner tests bench
	$(BIN)/mypy
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check app tools planner tests bench
	$(BIN)/mypy

bench-retrieval: install
	$(BIN)/python -m bench.retrieval --data ../shared/data

bench-latency: install
	$(BIN)/python -m bench.search_latency

# BFCL's non-live sets through the service against a real SGLang server (SGLANG_URL=...).
eval-live: install
	@test -n "$(SGLANG_URL)" || { echo "eval-live needs SGLANG_URL=http://host:30000/v1"; exit 2; }
	SGLANG_URL=$(SGLANG_URL) $(BIN)/python -m pytest -s tests/test_live_evals.py

# The live suites (model client, approvals, the engine) against a real SGLang server.
test-live: install
	@test -n "$(SGLANG_URL)" || { echo "test-live needs SGLANG_URL=http://host:30000/v1"; exit 2; }
	SGLANG_URL=$(SGLANG_URL) $(BIN)/python -m pytest -m live tests/test_live_sglang.py \
		tests/test_live_turns.py tests/test_live_engine.py
