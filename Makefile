PYTHON ?= python3

.PHONY: install test test-fast lint demo params bench gpu-check report repro-cpu protocol protocol-tune protocol-main \
	protocol-layers protocol-ablations protocol-curves protocol-report

## install: the one-command full install: torch 2.13.0 only where no torch is installed (a newer one is kept), then
## the project, editable, with every extra and the dev tools (console commands idspam-run, idspam-report, ...).
## Library only: pip install -e . ; the runner: pip install -e ".[runner]" (see docs/library.md)
install:
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[dev]"

## test: the whole suite, slow real-data checks included; two worker processes (pytest-xdist), each test file
## in one worker (its module fixtures run once)
test:
	$(PYTHON) -m pytest -q -n 2 --dist loadfile

## test-fast: unit tests only
test-fast:
	$(PYTHON) -m pytest -q -n 2 --dist loadfile -m "not slow"

lint:
	$(PYTHON) -m ruff check idspam tests experiments

## demo: the default run (ID-SPAM, packaged MiniLM, packaged demo data)
demo:
	$(PYTHON) -m idspam.run

## params: trainable parameters per method (roberta_base, roberta_large) beside the paper's Table 12; ARGS="--model minilm"
params:
	$(PYTHON) -m idspam params $(ARGS)

## bench: training speed and memory of every method against PEFT (roberta_base shapes, CPU); ARGS="--device cuda ..."
bench:
	$(PYTHON) -m idspam bench $(ARGS)

## gpu-check: the device check on one CUDA GPU (< 8 min): memory at 1B/8B shapes (bf16, nf4, checkpointing, cache),
## the step benchmark and a short MiniLM run on the GPU; JSON under OUT=outputs/gpu_check
gpu-check:
	PYTHON=$(PYTHON) bash experiments/gpu_check.sh

## report: tables (and the layer figure) of sweeps beside the paper's numbers; SWEEPS defaults to the newest sweep;
## ARGS="--format md csv json --reference roberta_base"
SWEEPS ?= $(shell ls -td outputs/multiruns/*/*/ 2>/dev/null | head -1)
report:
	$(PYTHON) -m idspam report $(SWEEPS) $(ARGS)

## repro-cpu: the CPU-scale reproduction (cpu_repro, then cpu_layer_sweep), archived and reported into
## experiments/results/cpu_repro (about 66 min on 2 cores)
STAMP := $(shell date +%Y-%m-%d_%H-%M-%S)
RESULTS := experiments/results/cpu_repro
repro-cpu:
	$(PYTHON) -m idspam.run -m experiment=cpu_repro hydra.sweep.dir=outputs/multiruns/cpu_repro/$(STAMP)
	$(PYTHON) -m idspam.run -m experiment=cpu_layer_sweep hydra.sweep.dir=outputs/multiruns/cpu_layer_sweep/$(STAMP)
	$(PYTHON) experiments/archive_sweep.py outputs/multiruns/cpu_repro/$(STAMP) $(RESULTS)/sweeps/cpu_repro
	$(PYTHON) experiments/archive_sweep.py outputs/multiruns/cpu_layer_sweep/$(STAMP) $(RESULTS)/sweeps/cpu_layer_sweep
	$(PYTHON) -m idspam report $(RESULTS)/sweeps/cpu_repro $(RESULTS)/sweeps/cpu_layer_sweep --out $(RESULTS) --reference roberta_base

## protocol: the reproduction protocol that decides the paper's claims (README "The reproduction protocol"): five
## parts that run one after another (each re-run continues where it stopped: finished jobs are kept), then the
## report into experiments/results/protocol. The tuning part writes conf/tuned/protocol_sst2.yaml, which the
## later parts read.
## PROTOCOL_JOBS jobs at a time, one thread each (2 on this 2-core machine; the time claim compares runs made so)
PROTOCOL := outputs/protocol
PROTOCOL_RESULTS := experiments/results/protocol
PROTOCOL_JOBS ?= 2
RUN_PROTOCOL = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PYTHON) -m idspam.run -m hydra/launcher=joblib \
	hydra.launcher.n_jobs=$(PROTOCOL_JOBS)
protocol: protocol-tune protocol-main protocol-layers protocol-ablations protocol-curves protocol-report

protocol-tune:
	$(RUN_PROTOCOL) experiment=protocol_tune hydra.sweep.dir=$(PROTOCOL)/tune
	$(PYTHON) -m idspam protocol $(PROTOCOL)/tune --write-tuned conf/tuned/protocol_sst2.yaml

protocol-main:
	$(RUN_PROTOCOL) experiment=protocol_main hydra.sweep.dir=$(PROTOCOL)/main

protocol-layers:
	$(RUN_PROTOCOL) experiment=protocol_layers hydra.sweep.dir=$(PROTOCOL)/layers_idspam
	$(RUN_PROTOCOL) experiment=protocol_layers method=lpt seed=1,2,3 hydra.sweep.dir=$(PROTOCOL)/layers_lpt

protocol-ablations:
	$(RUN_PROTOCOL) experiment=protocol_ablations hydra.sweep.dir=$(PROTOCOL)/ablations

protocol-curves:
	$(RUN_PROTOCOL) experiment=protocol_curves hydra.sweep.dir=$(PROTOCOL)/curves

protocol-report:
	for d in $(PROTOCOL)/*/; do $(PYTHON) experiments/archive_sweep.py $$d $(PROTOCOL_RESULTS)/sweeps/$$(basename $$d); done
	$(PYTHON) -m idspam protocol $(PROTOCOL_RESULTS)/sweeps --out $(PROTOCOL_RESULTS)
