-- repocket: add to an Integer attribute inside Redis, keeping its envelope and indexes exact.
--
-- KEYS[1] the record hash; KEYS[2] the field's sorted index when it is indexed.
-- ARGV[1] the field, ARGV[2] the amount, ARGV[3] the record id,
-- ARGV[4] "<prefix>:_eq:<field>:" when indexed, else "" (the equality sets of
-- the old and new value are named from it: they depend on the value read here),
-- ARGV[5] "1" when the model is versioned.
-- Returns {"ok", new value, new version or 0}, {"missing"}, {"shape"} (null or not an Integer
-- envelope), {"big"} (past 2^53: the caller adds exactly in Python instead) or
-- {"wrongtype", key, type}. Nothing is written unless it returns "ok".
local raw = redis.call("HGET", KEYS[1], ARGV[1])
if not raw then
  if redis.call("EXISTS", KEYS[1]) == 0 then return {"missing"} end
  return {"shape"}
end
local text = string.match(raw, '^{"type": "Integer", "value": (%-?%d+), "module": "repocket%.attributes"}$')
if not text then return {"shape"} end
if #text > 15 then return {"big"} end
local value = tonumber(text) + tonumber(ARGV[2])
if value >= 9007199254740992 or value <= -9007199254740992 then return {"big"} end
local new = string.format("%d", value)
local touched = {}
if ARGV[4] ~= "" then touched = {KEYS[2], ARGV[4] .. text, ARGV[4] .. new} end
for k, key in ipairs(touched) do
  local have = redis.call("TYPE", key)["ok"]
  local want = (k == 1) and "zset" or "set"
  if have ~= "none" and have ~= want then return {"wrongtype", key, have} end
end
redis.call("HSET", KEYS[1], ARGV[1],
  '{"type": "Integer", "value": ' .. new .. ', "module": "repocket.attributes"}')
if ARGV[4] ~= "" then
  redis.call("ZADD", KEYS[2], value, ARGV[3])
  redis.call("SREM", ARGV[4] .. text, ARGV[3])
  redis.call("SADD", ARGV[4] .. new, ARGV[3])
end
local version = 0
if ARGV[5] == "1" then version = redis.call("HINCRBY", KEYS[1], "_version", 1) end
return {"ok", new, version}
