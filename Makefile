# The two commands a newcomer needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test unit services-up services-down bench lock manifests

# The native module (native/: Rust, built from source with cargo; its build cache lives in the
# user cache folder, so a rebuild only compiles what changed). Without cargo the archiver runs on
# confluent-kafka's consumer, and says so when it starts.
NATIVE := native/Cargo.toml native/Cargo.lock native/pyproject.toml $(wildcard native/src/*.rs)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/archiver/native-target

$(BIN)/.installed: pyproject.toml constraints.txt $(NATIVE)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	@if command -v cargo >/dev/null; then \
		start=$$(date +%s); \
		$(BIN)/pip install -q ./native && \
		echo "native module archiver_native built in $$(( $$(date +%s) - start ))s"; \
	else \
		echo "cargo not found: skipping the native module (install Rust from rustup.rs for the faster consumer)"; \
	fi
	touch $@

## Start local Kafka, S3 and registry, then run the demo end to end.
demo: $(BIN)/.installed
	infra/services up
	eval "$$(infra/services env)" && $(BIN)/archiver demo

## Every test: unit, then integration against real services (reused if `infra/services up` ran,
## otherwise started on free ports for the session and stopped afterwards).
test: $(BIN)/.installed
	infra/tools || true  # promtool, nginx, helm, kubeconform: tests that need one are skipped without it
	$(BIN)/pytest

unit: $(BIN)/.installed
	$(BIN)/pytest -m unit

services-up:
	infra/services up

services-down:
	infra/services down

## Regenerate the pinned versions every install uses.
lock: $(BIN)/.installed
	$(BIN)/pip freeze --exclude-editable | grep -v '^archiver' > constraints.txt

## Render deploy/kubernetes/archiver.yaml from the Helm chart (a test checks it is current).
manifests:
	infra/tools helm
	{ echo "# Rendered from deploy/helm/archiver with deploy/kubernetes/values.yaml by 'make manifests': edit those."; \
	  $(HOME)/.cache/archiver/tools/helm template archiver deploy/helm/archiver --namespace archiver \
		-f deploy/kubernetes/values.yaml; } > deploy/kubernetes/archiver.yaml
