# llm-from-scratch-rs — the commands. Run `make help` for the list.
#
#   make lab    set up everything (first time ~15 min, then seconds) and open JupyterLab
#   make test   set up, then fmt + clippy + cargo test + every notebook in smoke settings
SHELL := /bin/bash
ENV := source scripts/env.sh &&
# extra arguments for jupyter lab, e.g. make lab LAB_ARGS="--port 8899 --no-browser"
LAB_ARGS ?=
# which notebooks `make notebooks` runs (default: all)
NB ?=

.PHONY: help lab setup test notebooks smoke bench gpu-check llm ddp-demo classroom clean-kernels
help:
	@awk -F':.*## ' '/^[a-z-]+:.*## /{printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

lab: setup ## set up, then open JupyterLab on notebooks/ with the llm-rust kernel
	@$(ENV) cd notebooks && exec "$$LLM_RS_VENV/bin/jupyter" lab \
	    $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) $(LAB_ARGS)

setup: ## install/refresh the venv, the evcxr kernel and the kernelspec (idempotent)
	@bash scripts/setup.sh

test: setup ## fmt, clippy, cargo test, pin check, then every notebook in smoke settings
	@bash scripts/test.sh

notebooks: setup ## execute every notebook (or NB="notebooks/00_*.ipynb") with full settings, outputs in place
	@$(ENV) "$$LLM_RS_VENV/bin/python" scripts/run_notebooks.py --full $(NB)

smoke: setup ## execute notebooks in smoke settings only (outputs in target/notebooks-smoke/)
	@$(ENV) "$$LLM_RS_VENV/bin/python" scripts/run_notebooks.py --smoke $(NB)

bench: setup ## benchmarks, side by side with the reference, as ratios
	@bash scripts/bench.sh

gpu-check: setup ## what libtorch sees (CUDA?), a few training steps and a generation, in tokens/s
	@$(ENV) cargo run --release --quiet -p llm_core --example gpu_check

llm: setup ## build the command-line tool target/release/llm (pretrain, finetune, dpo, generate, chat, eval, ...)
	@$(ENV) cargo build --release --quiet -p llm_cli && echo "target/release/llm: run it with --help"

ddp-demo: setup ## data-parallel training here: 1 process vs 2 ranks (Gloo, 127.0.0.1), losses side by side, step and all-reduce times
	@bash scripts/ddp_demo.sh

classroom: setup ## JupyterHub for a class on 127.0.0.1:8000: CLASSROOM_PASSWORD=... (lab session) or CLASSROOM_USERS=a,b (accounts, as root)
	@bash scripts/classroom.sh

clean-kernels: ## remove the kernels' persistent build dirs (the next first cell is cold again)
	@$(ENV) rm -rf "$$LLM_RS_CACHE/evcxr-slots"
