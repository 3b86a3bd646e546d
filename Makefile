# procedge: `make demo` runs the main job on the embedded defaults, `make test` runs the tests.
# Each installs what it needs into .venv first.

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.procedge-installed
# PyTorch is pinned to the build this project is tested with; override for another (e.g. a CPU wheel).
TORCH  ?= torch==2.14.1 torchvision==0.29.1
TARGET ?= intel-cpu
RUN    ?= runs/demo-$(TARGET)

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[full,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/procedge distill --target $(TARGET) --out $(RUN) --overwrite
	$(VENV)/bin/procedge export --run $(RUN)
	$(VENV)/bin/procedge export --run $(RUN) --format openvino --precision int8
	$(VENV)/bin/procedge export --run $(RUN) --format ort
	$(VENV)/bin/procedge export --run $(RUN) --format ort --precision int8
	$(VENV)/bin/procedge bench --run $(RUN)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf runs .pytest_cache
