CREATE INDEX messages_unread ON messages (contact_id) WHERE direction = 'inbound' AND read_at IS NULL;
ALTER TABLE contacts DROP COLUMN unread_count;
