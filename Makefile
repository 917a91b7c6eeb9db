# Two entry points: `make demo` (main job) and `make test` (whole suite).
# torch==2.13.0 (CPU) is installed BEFORE the package so pip never pulls a CUDA build.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
export OMP_NUM_THREADS ?= 1

.PHONY: demo test venv dev lint bench clean

$(VENV)/.core: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(FIND_LINKS) $(TORCH)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.core
	$(PIP) install -q -e '.[dev]'
	# torchattacks is a test-time reference only; --no-deps keeps torchvision out.
	$(PIP) install -q --no-deps 'torchattacks==3.5.1' requests
	# The autoattack extra (pyautoattack, no dependencies of its own) when the registry can be
	# reached; without it the AutoAttack tests skip.
	-@$(PIP) install -q --no-deps 'pyautoattack==0.2.0' >/dev/null 2>&1 || true
	touch $@

venv: $(VENV)/.core
dev: $(VENV)/.dev

demo: $(VENV)/.core
	$(PY) -m ncscope reproduce --config digits --overwrite

test: $(VENV)/.dev
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

bench: $(VENV)/.dev
	$(PY) benchmarks/bench_nc1.py
	$(PY) benchmarks/bench_attacks.py
	$(PY) benchmarks/bench_analyze.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache runs
