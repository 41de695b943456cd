# The two commands: `make up` and `make test`. Everything else is a helper.
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/shop-target

.PHONY: up down test build fmt lint tools logs bench chaos openapi

up: ## build, start PostgreSQL databases, the broker and the services; wait until healthy
	@scripts/up.sh

down: ## stop exactly what `make up` started
	@scripts/down.sh

test: ## install what is missing, then run every check and test
	@scripts/test.sh

build:
	cargo build --workspace

fmt:
	cargo fmt --all

lint:
	cargo clippy --workspace --all-targets -- -D warnings

tools: ## install the broker (tansu) and grpcurl into ~/.cache/shop-tools
	@source scripts/lib.sh && ensure_tansu_installed && ensure_grpcurl_installed

logs:
	@tail -n 50 -f .run/logs/*.log

bench: ## open-loop end-to-end figures on release builds (STEP_SECONDS, SCALE_ROWS)
	@source scripts/lib.sh && ensure_postgres && ensure_bench_tansu_installed
	cargo build --workspace --bins --release
	@source scripts/lib.sh && pg="$$(start_bench_postgres)" && trap 'stop_bench_postgres "$$pg"' EXIT && \
	  SHOP_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$$BENCH_PG_PORT/postgres" \
	  SHOP_TANSU_BIN="$$TANSU_BENCH_ROOT/bin/tansu" \
	  cargo bench -p shop-e2e --bench pipeline

chaos: ## seeded fault injection of the whole stack (FAULTS=100, SEED=random, REPLICAS=1)
	@source scripts/lib.sh && ensure_postgres && ensure_tansu_installed
	cargo build --workspace --bins
	$(CARGO_TARGET_DIR)/debug/chaos --faults $${FAULTS:-100} $${SEED:+--seed $$SEED} --replicas $${REPLICAS:-1}

openapi: ## regenerate the committed openapi.yaml from the code
	cargo run -q -p shop-gateway -- openapi > openapi.yaml
