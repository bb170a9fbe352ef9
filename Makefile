# Single entry point. `make demo` and `make test` run setup as needed.
SHELL := /bin/bash
ENV := source scripts/env.sh &&

.PHONY: setup demo test bench soak clean
setup:
	@bash scripts/setup.sh

demo: setup
	@$(ENV) python -m hypervla_ros.demo --config config/hypervla.yaml

test: setup
	@$(ENV) python -m pytest test -q

bench: setup
	@$(ENV) python bench/run_bench.py $(BENCH_ARGS)

soak: setup
	@$(ENV) python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf build install log
