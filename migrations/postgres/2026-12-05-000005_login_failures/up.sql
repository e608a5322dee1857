-- Failed logins, shared by every api-server instance on the database
-- (auth/rate_limit.rs): one row per key, a client address or a client
-- address + email, named by a digest (no address or email is stored). A
-- failure is one upsert; a row whose `expires_at` (an hour after its last
-- failure) has passed counts as none, starts again at one failure, and is
-- removed by the clean-up (cleanup.rs), which finds it by its index.
CREATE TABLE login_failures (
    key_digest TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    last_failure_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX login_failures_expires ON login_failures (expires_at);
