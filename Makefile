# procedge: `make demo` runs the main job on the embedded defaults, `make test` runs the tests.
# Each installs what it needs into .venv first.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.procedge-installed
# PyTorch is pinned to the build this project is tested with; override for another (e.g. a CPU wheel).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
TARGET ?= intel-cpu
RUN    ?= runs/demo-$(TARGET)
LABELS ?= 10

.PHONY: install demo test test-fast docs clean

install: $(STAMP)

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[full,test,docs]'
	touch $(STAMP)

# The demo keeps LABELS labels a class of the embedded MNIST-5k and uses the rest of its training split as the unlabelled
# pool: the same student trained alone (--method none, labelled images only) and distilled with ProC-KD, side by side.
demo: $(STAMP)
	$(VENV)/bin/procedge distill --target $(TARGET) --labels-per-class $(LABELS) --method none --out $(RUN)-alone --overwrite
	$(VENV)/bin/procedge distill --target $(TARGET) --labels-per-class $(LABELS) --out $(RUN) --overwrite
	$(VENV)/bin/procedge export --run $(RUN)
	$(VENV)/bin/procedge export --run $(RUN) --format openvino --precision int8
	$(VENV)/bin/procedge export --run $(RUN) --format ort
	$(VENV)/bin/procedge bench --run $(RUN) --baseline $(RUN)-alone

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf runs site .pytest_cache
