-- Each contact keeps its count of unread inbound messages, so the count in
-- every contact:updated costs one row read however many are unread.
ALTER TABLE contacts ADD COLUMN unread_count BIGINT NOT NULL DEFAULT 0;
UPDATE contacts SET unread_count = (
    SELECT COUNT(*) FROM messages
    WHERE messages.contact_id = contacts.id
      AND messages.direction = 'inbound' AND messages.read_at IS NULL
);
-- Nothing counts unread messages from the messages table any more.
DROP INDEX messages_unread;
