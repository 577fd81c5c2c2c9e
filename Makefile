# Both targets bootstrap .venv on a fresh machine: torch with its CUDA libraries from the package
# registry (about 6.4 GB on disk; 2-3 minutes on a fast link), then the project with its dev extras.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-fast demo lint clean

$(STAMP): pyproject.toml
	@set -e; start=$$(date +%s); \
	if [ ! -x $(PY) ]; then echo "==> creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); fi; \
	echo "==> upgrading pip"; $(PY) -m pip install -q --upgrade pip; \
	echo "==> installing prunebench with its dev extras into $(VENV): torch + NVIDIA CUDA libraries"; \
	echo "    (~5 GB of the 6.4 GB), torchvision, mlflow, optuna, hydra, fvcore, scikit-learn, pytest;"; \
	echo "    2-3 minutes on a fast link, longer on a slow one (pip lists each package below)"; \
	$(PY) -m pip install --no-input -e '.[dev]'; \
	touch $(STAMP); \
	echo "==> $(VENV) ready in $$(( $$(date +%s) - start )) s"; \
	echo "==> to use the prunebench command in this shell: source $(VENV)/bin/activate"

test: $(STAMP)
	$(PY) -m pytest -n 2 --durations=15

# The edit loop: the suite without the end-to-end runs (marked slow: plug-in installs, the tiny GPU
# check, whole studies and sweeps), the real PostgreSQL and Slurm servers and the CUDA tests.
# `make test` and CI (.ci/run) still run everything.
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow and not postgres and not slurm and not gpu" --durations=10

demo: $(STAMP)
	$(VENV)/bin/prunebench demo
	@echo "==> to run prunebench yourself: source $(VENV)/bin/activate (or call $(VENV)/bin/prunebench)"

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf outputs .pytest_cache
