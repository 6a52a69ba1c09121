-- repocket: write a batch of records atomically: all of it, or nothing.
--
-- Every save, delete and bulk operation is one call of this script. Each
-- record's checks run before any record's writes, so a batch that would fail
-- anywhere (a key of the wrong type, a record changed under the caller, a
-- unique value taken, a stale version) writes nothing at all.
--
-- ARGV[1] the number of records. Then, for each record:
--   <nkeys> <types> <nchecks> <nwrites> <check args...> <write args...>
-- where the record's keys are the next <nkeys> of KEYS (its first one is the
-- record hash), <types> has one letter per key for the type it must have if it
-- exists (h hash, s set, z sorted set, t string), and key numbers <k> in the
-- ops count from 1 within the record's own keys. Counts, not separators, delimit
-- the ops, so no value can be mistaken for one.
--
-- checks:  exists                      the hash must exist, else {"missing"}
--          guard   <field> <expected>  HGET must equal expected ("" = absent),
--                                      else {"conflict", field, current, ...}
--          unique  <k> <token> <id>    HGET key k token must be absent or id,
--                                      else {"taken", k, token, holder}
--          version <expected>          the hash's _version must equal expected
--                                      ("" = absent), else {"stale", current}
-- writes:  hset <field> <value> | set <k> <value> | del <k> | bump (_version + 1)
--          sadd <k> <member> | srem <k> <member>
--          zadd <k> <score> <member> | zrem <k> <member>
--          uset <k> <token> <id> | udel <k> <token> <id> (only while held by id)
--
-- Returns {"ok", <keys deleted by del, per record>...}, or
-- {"refused", <record number>, <its refusal>, ...} having written nothing.

local letters = {h = "hash", s = "set", z = "zset", t = "string"}

local records = {}
local i, base = 2, 0
for r = 1, tonumber(ARGV[1]) do
  local nkeys, nchecks, nwrites = tonumber(ARGV[i]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local first = i + 4
  records[r] = {base = base, nkeys = nkeys, types = ARGV[i + 1],
                checks = first, writes = first + nchecks, stop = first + nchecks + nwrites}
  base = base + nkeys
  i = first + nchecks + nwrites
end

local typed = {}  -- keys whose type this call has checked already
local function check(rec)
  local hash = KEYS[rec.base + 1]
  for k = 1, rec.nkeys do
    local key = KEYS[rec.base + k]
    local want = letters[string.sub(rec.types, k, k)]
    if typed[key] ~= want then
      local have = redis.call("TYPE", key)["ok"]
      if have ~= "none" and have ~= want then return {"wrongtype", key, have} end
      typed[key] = want
    end
  end
  local present = redis.call("EXISTS", hash) == 1
  local conflicts = {}
  local j = rec.checks
  while j < rec.writes do
    local op = ARGV[j]
    if op == "exists" then
      if not present then return {"missing"} end
      j = j + 1
    elseif op == "guard" then
      local current = present and redis.call("HGET", hash, ARGV[j + 1]) or ""
      if current ~= ARGV[j + 2] then
        conflicts[#conflicts + 1] = ARGV[j + 1]
        conflicts[#conflicts + 1] = current
      end
      j = j + 3
    elseif op == "unique" then
      local holder = redis.call("HGET", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
      if holder and holder ~= ARGV[j + 3] then
        return {"taken", ARGV[j + 1], ARGV[j + 2], holder}
      end
      j = j + 4
    elseif op == "version" then
      local current = redis.call("HGET", hash, "_version") or ""
      if current ~= ARGV[j + 1] then return {"stale", current} end
      j = j + 2
    else
      return redis.error_reply("repocket: unknown check " .. tostring(op))
    end
  end
  if #conflicts > 0 then
    table.insert(conflicts, 1, "conflict")
    return conflicts
  end
  return nil
end

local claims = {}  -- unique tokens claimed earlier in this batch
local function claim(rec)
  local j = rec.checks
  while j < rec.writes do
    local op = ARGV[j]
    if op == "unique" then
      local slot = KEYS[rec.base + tonumber(ARGV[j + 1])] .. "\0" .. ARGV[j + 2]
      if claims[slot] and claims[slot] ~= ARGV[j + 3] then
        return {"taken", ARGV[j + 1], ARGV[j + 2], claims[slot]}
      end
      claims[slot] = ARGV[j + 3]
      j = j + 4
    elseif op == "guard" then j = j + 3
    elseif op == "version" then j = j + 2
    else j = j + 1 end
  end
  return nil
end

local refused = {}
for r, rec in ipairs(records) do
  local refusal = check(rec) or claim(rec)
  if refusal then
    refused[#refused + 1] = r
    refused[#refused + 1] = refusal
  end
end
if #refused > 0 then
  table.insert(refused, 1, "refused")
  return refused
end

local out = {"ok"}
for _, rec in ipairs(records) do
  local hash = KEYS[rec.base + 1]
  local deleted = 0
  local j = rec.writes
  while j < rec.stop do
    local op = ARGV[j]
    if op == "hset" then
      redis.call("HSET", hash, ARGV[j + 1], ARGV[j + 2])
      j = j + 3
    elseif op == "bump" then
      redis.call("HINCRBY", hash, "_version", 1)
      j = j + 1
    elseif op == "set" then
      redis.call("SET", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
      j = j + 3
    elseif op == "del" then
      deleted = deleted + redis.call("DEL", KEYS[rec.base + tonumber(ARGV[j + 1])])
      j = j + 2
    elseif op == "sadd" then
      redis.call("SADD", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
      j = j + 3
    elseif op == "srem" then
      redis.call("SREM", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
      j = j + 3
    elseif op == "zadd" then
      redis.call("ZADD", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2], ARGV[j + 3])
      j = j + 4
    elseif op == "zrem" then
      redis.call("ZREM", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
      j = j + 3
    elseif op == "uset" then
      redis.call("HSET", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2], ARGV[j + 3])
      j = j + 4
    elseif op == "udel" then
      local key = KEYS[rec.base + tonumber(ARGV[j + 1])]
      if redis.call("HGET", key, ARGV[j + 2]) == ARGV[j + 3] then
        redis.call("HDEL", key, ARGV[j + 2])
      end
      j = j + 4
    else
      -- unreachable for plans built by repocket: checks ran, nothing may fail here
      return redis.error_reply("repocket: unknown write " .. tostring(op))
    end
  end
  out[#out + 1] = deleted
end
return out
