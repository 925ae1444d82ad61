# A fresh machine needs only `make demo` or `make test`: each creates .venv and installs on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,redis,postgres]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/loopml demo --dir demo-state

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile

bench: $(STAMP)
	$(BIN)/python bench/bench_pit.py
	$(BIN)/python bench/bench_online.py

clean:
	rm -rf $(VENV) demo-state
