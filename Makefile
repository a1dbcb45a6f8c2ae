# The two commands of the README: `make demo` runs the default topology end to end,
# `make test` runs the test suite. Both create .venv when it is missing.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: a bare `torch` would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# `mpsl run --netns` needs ip and tc (iproute2): installed when missing, as root with apt;
	# never an error (without them --netns says so in one line and its tests skip)
	command -v tc >/dev/null || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq iproute2; } || \
		echo "note: iproute2 not installed: mpsl run --netns will say why"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mpsl run topologies/two_hop.yaml --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
