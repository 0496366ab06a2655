# Two commands for a new user on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-unit test-integration lint bench services synth protos clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# A test tool in a virtual environment of its own, made afresh when its pin changes:
# $(call tool_env,FOLDER,REQUIREMENT)
define tool_env
	rm -rf $(1)
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet "$(2)"
	touch $@
endef

# checkov (tests/infra/test_checks.py) in an environment of its own: it pins boto3, botocore,
# packaging and networkx, and through cloudsplaining policy_sentry, below what .venv needs.
CHECKOV_VERSION := 3.3.30
CHECKOV := $(VENV)/checkov
$(CHECKOV)/.installed-$(CHECKOV_VERSION):
	$(call tool_env,$(CHECKOV),checkov==$(CHECKOV_VERSION))

# The KServe SDK's Open Inference Protocol clients (tests/integration/test_oip_conformance.py) in an
# environment of their own: kserve pins pandas and others below what .venv needs.
KSERVE_VERSION := 0.21.0
KSERVE := $(VENV)/kserve
$(KSERVE)/.installed-$(KSERVE_VERSION):
	$(call tool_env,$(KSERVE),kserve==$(KSERVE_VERSION))

# The pinned AWS CDK CLI (package.json) for `npx cdk synth | deploy | destroy`.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

setup: $(VENV)/.installed node_modules/.installed $(CHECKOV)/.installed-$(CHECKOV_VERSION) $(KSERVE)/.installed-$(KSERVE_VERSION)

demo: setup
	$(VENV)/bin/sagegate demo

# Every environment's templates in cdk.out/, Lambda code bundled for real, cdk-nag checked.
# (`cdk synth` synthesizes every stack of the app; the pinned CLI has no --all for synth.)
synth: setup
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 npx cdk synth --quiet

# redis-server for the gateway's cache; chromium renders the monitoring report in its test.
services:
	bash scripts/ensure-tools.sh redis-server chromium

# Two workers for the independent tests; the chaos tests (timing under load) alone, after them.
test: setup services
	$(PY) -m pytest -m "not chaos" -n 2 $(PYTEST_ARGS)
	$(PY) -m pytest -m chaos $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -m "not integration" $(PYTEST_ARGS)

test-integration: setup services
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/format_asl.py --check
	$(VENV)/bin/mypy sagegate benchmarks infra functions/gateway/handler.py
	$(VENV)/bin/mypy functions/deploy/handler.py
	$(VENV)/bin/mypy functions/rotation/handler.py
	$(VENV)/bin/mypy functions/endpoint/handler.py
	$(VENV)/bin/mypy functions/images/handler.py
	$(VENV)/bin/mypy functions/monitor/handler.py

bench: setup
	bash scripts/ensure-tools.sh wrk redis-server
	$(PY) benchmarks/server_throughput.py
	$(PY) benchmarks/gateway_overhead.py
	$(PY) benchmarks/stack_throughput.py
	$(PY) benchmarks/oip_throughput.py

# The OIP v2 gRPC stubs, committed: regenerate after changing protos/ (or grpcio-tools' pin).
protos: setup
	$(PY) -m grpc_tools.protoc -Isagegate/server/oip/proto=protos --python_out=. --pyi_out=. \
		--grpc_python_out=. protos/grpc_predict_v2.proto

clean:
	rm -rf $(VENV) node_modules cdk.out .sagegate .pytest_cache .mypy_cache .ruff_cache
