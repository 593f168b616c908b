-- A username's throttle row was keyed `user:<the name as typed, lowercased>`, and what is
-- typed in the username field is often a password (OWASP Logging Cheat Sheet). The key is
-- now `username:<HMAC-SHA256 of the name under a key derived from the master key>`
-- (tessera-auth, `Auth::username_throttle_key`). Nothing reads the old rows any more:
-- delete them rather than keep the text. This lifts the username lockouts in force at the
-- upgrade (each would have ended within `lockout.max` anyway). `prune` deletes rows of the
-- old form that an instance of an earlier version writes during a rolling upgrade.
DELETE FROM login_throttle WHERE key LIKE 'user:%';
