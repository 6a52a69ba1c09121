-- repocket: give back the write leases a writer holds (see write.lua, "Leases").
-- KEYS the lease keys of the writer's records; ARGV[1] its token.
-- Deletes each lease that still holds the token; returns how many it deleted.
-- Called when a writer gives up with leases in hand, so others need not wait
-- for them to expire.
local released = 0
for _, key in ipairs(KEYS) do
  -- GET fails on a key of another type: such a key is no lease of ours
  if redis.call("TYPE", key)["ok"] == "string" and redis.call("GET", key) == ARGV[1] then
    released = released + redis.call("DEL", key)
  end
end
return released
