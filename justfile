# Shortcuts for the project's commands; each is also runnable without just.

# Run the API server and the example page on the embedded defaults.
dev:
    scripts/dev

# Load the demo team (alice@example.com / password123, bob@example.com).
demo:
    scripts/dev demo

# Play an inbound SMS locally: `just sms +14155550111 "Hello"`.
sms from body:
    scripts/dev sms receive --from {{from}} --body {{quote(body)}}

# Every test: Rust and Node.
test:
    scripts/test

# Criterion benchmarks of realtime-core, next to the official Node SDK.
bench:
    scripts/bench

# realtime-server fan-out and trigger throughput, next to the floor (and sockudo with WITH_SOCKUDO=1).
bench-server:
    scripts/bench-server

# realtime-server's user-space instructions per delivery (callgrind); pass older builds to compare.
bench-instructions *builds:
    scripts/bench-instructions {{builds}}

fmt:
    cargo fmt --all

lint:
    cargo clippy --workspace --all-targets -- -D warnings

# The fault suite: kill -9 under load, PostgreSQL restarted, a full disk, realtime restarted, hostile clients.
faults *scenario:
    scripts/faults {{scenario}}

# Every fuzz target at 100,000 cases in release mode (minutes; not run by CI).
fuzz:
    scripts/fuzz

# api-server's sends and inbound webhooks under load, next to the insert floor.
bench-api:
    scripts/bench-api

# GET /api/me p99 with and without a flood of wrong-password logins.
bench-login:
    scripts/bench-login

# Another client's subscribe latency while a 10,000-channel connection leaves.
bench-teardown:
    scripts/bench-teardown
