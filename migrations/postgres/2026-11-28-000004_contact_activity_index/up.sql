-- The contact list pages by activity (GET /api/contacts?before=): a team's
-- contacts, newest updated_at first, ties by id. Scanned backwards, this
-- index finds any page without sorting, however many contacts a team has.
CREATE INDEX contacts_team_activity ON contacts (team_id, updated_at, id);
