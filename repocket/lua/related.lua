-- repocket: the records behind index sets, read in one call (prefetch_related: one round trip).
--
-- KEYS are index sets (the equality sets of a Pointer or PointerList, one per
-- target and partition). ARGV[1] is the number S of ByteStreams of the
-- records, ARGV[2 .. S + 1] their names, then one record key prefix per set:
-- a member id names the record <prefix>:<id> and its strings
-- <prefix>:<id>:field:<name>. Only reads: the reply is one snapshot.
--
-- Returns, per set, a list {id, hash fields (HGETALL), S stream values, ...},
-- with no entry for an id whose hash does not exist (a stale index entry).
-- A set or record key of another type is an error naming it.
local streams = tonumber(ARGV[1])
local out = {}
for i, set in ipairs(KEYS) do
  local kind = redis.call("TYPE", set)["ok"]
  if kind ~= "none" and kind ~= "set" then
    return redis.error_reply("WRONGTYPE " .. set .. " is a " .. kind)
  end
  local prefix = ARGV[streams + 1 + i]
  local found = {}
  for _, id in ipairs(kind == "set" and redis.call("SMEMBERS", set) or {}) do
    local record = prefix .. ":" .. id
    local have = redis.call("TYPE", record)["ok"]
    if have == "hash" then
      found[#found + 1] = id
      found[#found + 1] = redis.call("HGETALL", record)
      for s = 1, streams do
        found[#found + 1] = redis.call("GET", record .. ":field:" .. ARGV[1 + s]) or ""
      end
    elseif have ~= "none" then
      return redis.error_reply("WRONGTYPE " .. record .. " is a " .. have)
    end
  end
  out[i] = found
end
return out
