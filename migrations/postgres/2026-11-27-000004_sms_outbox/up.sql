-- Outbound SMS waiting to be handed to Twilio: queued in the same transaction
-- as their message, deleted once Twilio's answer is recorded. A claimed job
-- is leased (`locked_until`); a job whose claimer died is taken again once
-- the lease has passed. `sent_unknown`: an earlier attempt may have reached
-- Twilio, so the next one first looks the message up there.
CREATE TABLE sms_outbox (
    message_id BIGINT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP NOT NULL,
    locked_until TIMESTAMP,
    lock_token TEXT,
    sent_unknown BOOLEAN NOT NULL DEFAULT FALSE,
    first_attempt_at TIMESTAMP,
    last_error TEXT,
    created_at TIMESTAMP NOT NULL
);
CREATE INDEX sms_outbox_due ON sms_outbox (next_attempt_at);

-- Outbound messages an earlier version left queued without a SID (its send
-- ran in a task that a stop could cut short): queued again, looked up first,
-- since the stopped attempt may have reached Twilio.
INSERT INTO sms_outbox (message_id, attempts, next_attempt_at, sent_unknown, first_attempt_at, created_at)
SELECT id, 1, created_at, TRUE, created_at, created_at
FROM messages
WHERE direction = 'outbound' AND status = 'queued' AND twilio_sid IS NULL;
