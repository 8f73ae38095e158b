# `make run`: set up (first time) and train the default config on both backends, then
# print the parity summary. `make test`: set up (first time) and run the test suite.
.PHONY: run test setup

run:
	@PY=$$(scripts/setup.sh) && $$PY -m parity_tests.run

test:
	@PY=$$(scripts/setup.sh) && $$PY -m pytest -n 2

setup:
	@scripts/setup.sh >/dev/null
