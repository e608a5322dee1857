# Shortcuts for the project's commands; each is also runnable without just.

# Run the API server on the embedded defaults.
dev:
    scripts/dev

# Every test: Rust and Node.
test:
    scripts/test

# Criterion benchmarks of realtime-core, next to the official Node SDK.
bench:
    scripts/bench

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings
