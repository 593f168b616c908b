-- GET with a different bearer token on every request, round-robin over a file of tokens.
-- Usage: wrk ... -s tokens.lua URL -- TOKENS_FILE
-- Every thread reads the whole file and pre-formats one request per token (so the Lua side
-- costs the same per request as a fixed request); threads start at different offsets.
local requests = {}
local next_index = 1
local threads = 0

function setup(thread)
  thread:set("thread_number", threads)
  threads = threads + 1
end

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then
      requests[#requests + 1] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. line })
    end
  end
  if #requests == 0 then error("no tokens in " .. args[1]) end
  local n = tonumber(wrk.thread:get("thread_number")) or 0
  next_index = (n * 7919) % #requests + 1
end

function request()
  local r = requests[next_index]
  next_index = next_index % #requests + 1
  return r
end

done = dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
