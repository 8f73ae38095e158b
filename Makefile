# `make run`: set up (first time) and train the default config on both backends, then
# print the parity summary. `make test`: set up (first time) and run the test suite.
# `make lint`: ruff's lint and format check, then mypy at the strictness [tool.mypy] in
# pyproject.toml states. `make profile PROFILE=sse41`: the float32 and mixed-precision subset on a
# simulated machine (parity_tests/profiles.py; no PROFILE: all).
.PHONY: run test test-full test-rest lint profile setup

run:
	@PY=$$(scripts/setup.sh) && $$PY -m paritykit.run

test:
	@PY=$$(scripts/setup.sh) && $$PY -m pytest -n 2 --dist worksteal -m "not full"

test-full:
	@PY=$$(scripts/setup.sh) && HYPOTHESIS_PROFILE=full $$PY -m pytest -n 2 --dist worksteal

# REST narrows test-rest further, e.g. REST="not float32" (CI runs those under a second profile instead)
test-rest:
	@PY=$$(scripts/setup.sh) && HYPOTHESIS_PROFILE=full $$PY -m pytest -n 2 --dist worksteal -m "(full or hypothesis)$(if $(REST), and ($(REST)))"

lint:
	@PY=$$(scripts/setup.sh) && $$PY -m ruff check . && $$PY -m ruff format --check . && $$PY -m mypy

profile:
	@PY=$$(scripts/setup.sh) && $$PY -m parity_tests.profiles $(PROFILE)

setup:
	@scripts/setup.sh >/dev/null
