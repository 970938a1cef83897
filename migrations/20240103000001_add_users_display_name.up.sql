-- Nullable, so the previous release (which does not know the column) keeps inserting users.
ALTER TABLE users ADD COLUMN display_name VARCHAR(100);
