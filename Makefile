# The two commands a newcomer runs (both install what the machine lacks first):
#   make demo   - build and run the walk-through of the embedded log
#   make test   - run every test (what CI runs, after fmt and clippy)
.PHONY: demo test lint bench
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
lint:
	bash scripts/setup.sh && . scripts/env.sh && cargo fmt --all --check && cargo clippy --workspace --all-targets -- -D warnings
bench:
	bash scripts/bench.sh
