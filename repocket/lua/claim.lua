-- repocket: a unique value's claim, for a model spread over partitions (see
-- repocket/plan/claims.py for the protocol). KEYS[1] is the claims hash of the
-- value's bucket: token -> "<id> <generation>".
--
-- ARGV: claim <token> <id> <generation>
--           takes the token when nobody claims it, or when <id> does (a new
--           generation); else returns {"held", <current claim>}
--       cas <token> <expected claim> <id> <generation>
--           replaces the claim while it is still <expected claim> (<id> empty:
--           deletes it); else returns {"changed", <current claim or false>}
-- Returns {"ok"} when done.
local key, op, token = KEYS[1], ARGV[1], ARGV[2]
local kind = redis.call("TYPE", key)["ok"]
if kind ~= "none" and kind ~= "hash" then return {"wrongtype", key, kind} end
local current = redis.call("HGET", key, token)
if op == "claim" then
  if current and string.match(current, "^[^ ]*") ~= ARGV[3] then return {"held", current} end
  redis.call("HSET", key, token, ARGV[3] .. " " .. ARGV[4])
  return {"ok"}
end
if op ~= "cas" then return redis.error_reply("repocket: unknown claim op") end
if current ~= ARGV[3] then return {"changed", current} end
if ARGV[4] == "" then
  redis.call("HDEL", key, token)
else
  redis.call("HSET", key, token, ARGV[4] .. " " .. ARGV[5])
end
return {"ok"}
