# make train: set up (first time) and train NNGK on the embedded digits data set; make test: set up and run the tests.
.PHONY: setup train test test-all

setup:
	@bash scripts/setup.sh

train: setup
	.venv/bin/weakdml train $(ARGS)

test: setup
	.venv/bin/python -m pytest $(ARGS)

test-all: setup
	.venv/bin/python -m pytest -m "slow or not slow" $(ARGS)
