-- wrk script for scripts/soak.sh: refresh-token rotation under load (RFC 6749 §6).
-- Usage: wrk -t1 -c N -s refresh.lua URL/token -- TOKENS_FILE  (2N + 4 tokens, one a line)
-- Each request spends one refresh token from the pool; each 200 answer puts its successor
-- back. wrk keeps one request in flight per connection (and calls request() once more per
-- thread before it starts, spending a token it never sends), so a pool of more than N + 1
-- tokens never drains unless a refresh fails, and a failure is counted as an error anyway.
-- A token is never sent twice: that would be a replay, and reuse detection would (rightly)
-- revoke the family.
local pool = {}

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then pool[#pool + 1] = line end
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  local token = table.remove(pool, 1) or "pool-empty"
  return wrk.format(nil, nil, nil, "grant_type=refresh_token&refresh_token=" .. token)
end

function response(status, headers, body)
  if status == 200 then
    local token = body:match('"refresh_token":"([^"]+)"')
    if token then pool[#pool + 1] = token end
  end
end

done = dofile(os.getenv("SOAK_LUA_DIR") .. "/report.lua")
