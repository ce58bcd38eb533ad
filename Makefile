# perllm: two commands. `make run` sets up and runs the main job; `make test` sets up and runs every check
# (`make check`: lint, types and the unit lane, the fast answer while editing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check setup lock lint typecheck pytest unit redis bench bench-real llamacpp clean

# The environment is installed from requirements.lock, the exact versions the tests passed with;
# pyproject.toml keeps the version ranges a library user installs against.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Refresh the lock to the newest versions pyproject.toml allows (then run `make test`).
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet uv
	$(BIN)/uv pip compile --quiet --upgrade --universal --python-version 3.11 \
		--extra dev --custom-compile-command "make lock" -o requirements.lock pyproject.toml

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/perllm reproduce --quick --out results/

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

# llama.cpp's Python server built once into ~/.cache/perllm/wheels, then installed from there;
# llama.cpp's own C++ server (llama-server, for the scraping test) once into ~/.cache/perllm/bin.
llamacpp: $(STAMP)
	scripts/build_llama_wheel.sh $(BIN)/python
	scripts/build_llama_server.sh $(BIN)/python

# The gateway-replica tests start a real redis-server (Debian package redis-server, 7.0).
redis:
	@command -v redis-server >/dev/null || { \
		[ "$$(id -u)" = 0 ] || { echo "redis-server is missing: install Debian's redis-server (make test installs it when run as root)" >&2; exit 2; }; \
		apt-get update && apt-get install -y redis-server; }

pytest: $(STAMP) llamacpp redis
	$(BIN)/pytest -q

# The unit lane: every test that needs no service, no build and no long run (markers in pyproject.toml).
UNIT := not (redis or ray or llamacpp or chaos or fuzz or slow)
unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider -m "$(UNIT)"

test: lint typecheck pytest

# The fast answer while editing: lint, types and the unit lane.
check: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py
	$(BIN)/python benchmarks/decision_speed.py
	$(BIN)/python benchmarks/gateway_overhead.py

bench-real: llamacpp
	$(BIN)/python benchmarks/fidelity.py
	$(BIN)/python benchmarks/mixed_testbed.py

clean:
	rm -rf $(VENV) results src/perllm/policies/__pycache__/numba-*
