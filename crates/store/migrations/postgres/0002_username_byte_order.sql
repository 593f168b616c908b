-- Usernames sort in byte order, as on SQLite and as Rust compares them, whatever the
-- database's default collation: linguistic collations (en_US.UTF-8, ICU) order the
-- punctuation allowed in usernames (. _ - @ +) differently, so `list_users` disagreed
-- between backends and between servers. Equality (the UNIQUE constraint) is unchanged.
ALTER TABLE users ALTER COLUMN username TYPE TEXT COLLATE "C";
