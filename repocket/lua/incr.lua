-- repocket: add to an Integer attribute inside Redis, keeping its envelope and indexes exact.
--
-- KEYS[1] the record hash; KEYS[2] the record's lease <prefix>:_lease:<id>;
-- when the field is indexed, KEYS[3] its sorted index and KEYS[4...] the
-- equality sets of the values ARGV[7...] names, one each: the caller's guesses
-- at the stored value and at the result (every key is declared; none is named
-- here from an argument).
-- ARGV[1] the field, ARGV[2] the amount (an integer below 2^52), ARGV[3] the
-- record id, ARGV[4] "1" when indexed, else "", ARGV[5] "1" when the model is
-- versioned, ARGV[6] the model's storage format ("envelope" or "plain": the
-- bare integer). When the sets of the stored value or of the result are not
-- among those declared, it returns {"moved", stored value}, having written
-- nothing: the caller calls again with sets around that value.
-- Returns {"ok", new value, new version or 0}, {"missing"}, {"shape"} (null,
-- absent, or not the exact text repocket writes), {"big"}
-- (past 2^53: the caller adds exactly in Python instead), {"leased"} (another
-- writer holds the record's lease: wait and call again), {"wrongtype", key,
-- type} or {"corrupt", "_version", problem, value}. Every check runs before
-- the first write, and nothing is written unless it returns "ok".

-- The record hash and its lease must have their types: a command on a key of
-- another type fails.
for k, want in ipairs({"hash", "string"}) do
  local have = redis.call("TYPE", KEYS[k])["ok"]
  if have ~= "none" and have ~= want then return {"wrongtype", KEYS[k], have} end
end
-- Another writer holds the lease (write.lua): it is about to write this record.
if lease_holder(KEYS[2]) then return {"leased"} end
-- A record past its deadline (lib.lua) is gone.
if past_deadline(KEYS[1]) then return {"missing"} end
local raw = redis.call("HGET", KEYS[1], ARGV[1])
if not raw then
  if redis.call("EXISTS", KEYS[1]) == 0 then return {"missing"} end
  return {"shape"}
end
-- Only the exact field repocket writes, holding a canonical integer: the old
-- value's equality set is named from this text, so "-0" or "007" would miss
-- the entry repocket made. Anything else takes the checked path.
local plain = ARGV[6] == "plain"
local text
if plain then
  text = string.match(raw, '^%-?%d+$')
else
  text = string.match(raw, '^{"type": "Integer", "value": (%-?%d+), "module": "repocket%.attributes"}$')
end
if not text or (text ~= "0" and not string.match(text, "^%-?[1-9]%d*$")) then return {"shape"} end
-- Both numbers must be integers a Lua number (a double) holds exactly.
if #text > 15 then return {"big"} end
local step = tonumber(ARGV[2])
if not step or step % 1 ~= 0 or step >= 4503599627370496 or step <= -4503599627370496 then
  return redis.error_reply("repocket: the incr amount is not an integer below 2^52")
end
local value = tonumber(text) + step
if value >= 9007199254740992 or value <= -9007199254740992 then return {"big"} end
local new = string.format("%d", value)
local old_set, new_set
if ARGV[4] ~= "" then
  for k = 7, #ARGV do
    if ARGV[k] == text then old_set = KEYS[k - 3] end
    if ARGV[k] == new then new_set = KEYS[k - 3] end
  end
  if not old_set or not new_set then return {"moved", text} end
  -- the index keys must have their types too
  for k, key in ipairs({KEYS[3], old_set, new_set}) do
    local have = redis.call("TYPE", key)["ok"]
    local want = (k == 1) and "zset" or "set"
    if have ~= "none" and have ~= want then return {"wrongtype", key, have} end
  end
end
-- The version counter must be one HINCRBY can add to (see lib.lua).
if ARGV[5] == "1" then
  local stored = redis.call("HGET", KEYS[1], "_version")
  local problem = version_problem(stored, true)
  if problem then return {"corrupt", "_version", problem, string.sub(stored, 1, 64)} end
end

if plain then
  redis.call("HSET", KEYS[1], ARGV[1], new)
else
  redis.call("HSET", KEYS[1], ARGV[1],
    '{"type": "Integer", "value": ' .. new .. ', "module": "repocket.attributes"}')
end
if ARGV[4] ~= "" then
  redis.call("ZADD", KEYS[3], value, ARGV[3])
  redis.call("SREM", old_set, ARGV[3])
  redis.call("SADD", new_set, ARGV[3])
end
local version = 0
if ARGV[5] == "1" then version = redis.call("HINCRBY", KEYS[1], "_version", 1) end
return {"ok", new, version}
