DROP TABLE early_statuses;
