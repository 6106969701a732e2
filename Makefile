# Two commands do all the set-up (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
LS_VENV := .venv-ls
BIN := $(VENV)/bin
LABEL_STUDIO := label-studio==1.23.2

.PHONY: demo test setup setup-labelstudio

# torch==2.13.0 first: it is the local CPU build, and the package's torch>=2.3 is then already met
# (a looser install pulls gigabytes of CUDA wheels).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[all,dev]'
	touch $@

# Label Studio pins clash with other packages: it lives in its own virtual environment.
$(LS_VENV)/.installed:
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/pip install -q '$(LABEL_STUDIO)' gunicorn
	touch $@

setup: $(VENV)/.installed
setup-labelstudio: $(LS_VENV)/.installed

demo: setup setup-labelstudio
	$(BIN)/curator demo

test: setup setup-labelstudio
	eval "$$(bash tests/services.sh)" && trap 'bash tests/services.sh stop' EXIT && $(BIN)/python -m pytest
