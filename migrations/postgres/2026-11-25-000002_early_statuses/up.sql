-- Twilio status callbacks that arrived before Twilio's answer to our send
-- told us the message's SID; applied when the SID is stored.
CREATE TABLE early_statuses (
    twilio_sid TEXT PRIMARY KEY NOT NULL,
    status TEXT NOT NULL,
    error_code TEXT,
    created_at TIMESTAMP NOT NULL
);
