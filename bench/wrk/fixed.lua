-- A fixed request: the URL and -H headers from the command line, and, when BENCH_BODY is
-- set, a form-encoded POST with that body (the password grant).
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

done = dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
