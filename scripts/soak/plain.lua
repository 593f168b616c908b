-- wrk script for scripts/soak.sh: a fixed request (method, headers and body from the command
-- line: -H, and SOAK_BODY for a form-encoded POST), reported like the others.
local body = os.getenv("SOAK_BODY")
if body and body ~= "" then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

done = dofile(os.getenv("SOAK_LUA_DIR") .. "/report.lua")
