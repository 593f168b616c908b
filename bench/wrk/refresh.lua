-- The refresh grant (RFC 6749 §6) under load, each refresh token used exactly once.
-- Usage: wrk -tT -cC ... -s refresh.lua URL/token -- TOKENS_FILE [HARVEST_PREFIX]
--
-- TOKENS_FILE holds fresh refresh tokens, one a line, at least 2C + 2T of them; thread i
-- takes lines i, i+T, i+2T... Every request spends one token from its thread's pool and
-- every 200 answer puts the rotated successor back, so each token chain is used strictly in
-- sequence: wrk keeps one request in flight per connection, so a connection always takes
-- the successor of a chain no other connection holds. (wrk's Lua API does not say which
-- connection an answer belongs to, so chains are pooled per thread rather than pinned to a
-- connection; with more tokens than connections the pool never drains unless a refresh
-- fails, and a failure is counted as an error.) A token is never sent twice: that would be
-- a replay and reuse detection would, rightly, revoke the whole session.
--
-- With HARVEST_PREFIX, each thread also appends the access tokens it receives to
-- HARVEST_PREFIX.<thread>: that is how bench.py gets 10,000 distinct valid tokens cheaply.
local pool = {}
local harvest = nil
local threads = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  local me = tonumber(wrk.thread:get("thread_number")) or 0
  local count = tonumber(os.getenv("BENCH_THREADS") or "1")
  local i = 0
  for line in io.lines(args[1]) do
    if line ~= "" then
      if i % count == me then pool[#pool + 1] = line end
      i = i + 1
    end
  end
  if args[2] then
    harvest = io.open(args[2] .. "." .. me, "w")
    harvest:setvbuf("line") -- wrk exits without closing the Lua states
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
    if harvest then
      local access = body:match('"access_token":"([^"]+)"')
      if access then harvest:write(access, "\n") end
    end
  end
end

done = dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
