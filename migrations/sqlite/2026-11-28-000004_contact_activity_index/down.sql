DROP INDEX contacts_team_activity;
