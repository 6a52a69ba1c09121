-- repocket: write one record atomically (save, delete, counters share it).
--
-- KEYS[1]   the record hash; KEYS[2..] every other key the write touches.
-- ARGV[1]   one letter per key giving the type it must have (or not exist):
--           h hash, s set, z sorted set, t string.
-- ARGV[2..] checks, then the word "|", then writes. Every check runs before
--           any write, so a write that would fail (wrong type, conflict,
--           taken unique value) fails having written nothing.
--
-- checks:  exists                      the hash must exist, else {"missing"}
--          absent                      the hash must not exist, else {"exists"}
--          guard   <field> <expected>  HGET must equal expected ("" = absent),
--                                      else {"conflict", field, current, ...}
--          unique  <k> <token> <id>    HGET KEYS[k] token must be absent or id,
--                                      else {"taken", k, token, holder}
--          version <expected>          the hash's _version field must equal expected
--                                      ("" = absent), else {"stale", current}
-- writes:  hset <field> <value> | hdel <field> | set <k> <value> | del <k>
--          bump (HINCRBY the hash's _version by 1)
--          sadd <k> <member> | srem <k> <member>
--          zadd <k> <score> <member> | zrem <k> <member>
--          uset <k> <token> <id> | udel <k> <token> <id> (only if held by id)
-- returns {"ok", <number of keys deleted by del>}

local types = {h = "hash", s = "set", z = "zset", t = "string"}
for k = 1, #KEYS do
  local want = types[string.sub(ARGV[1], k, k)]
  local have = redis.call("TYPE", KEYS[k])["ok"]
  if have ~= "none" and have ~= want then
    return {"wrongtype", KEYS[k], have}
  end
end

local i, n = 2, #ARGV
local conflicts = {}
while i <= n and ARGV[i] ~= "|" do
  local op = ARGV[i]
  if op == "exists" then
    if redis.call("EXISTS", KEYS[1]) == 0 then return {"missing"} end
    i = i + 1
  elseif op == "absent" then
    if redis.call("EXISTS", KEYS[1]) == 1 then return {"exists"} end
    i = i + 1
  elseif op == "guard" then
    local current = redis.call("HGET", KEYS[1], ARGV[i + 1]) or ""
    if current ~= ARGV[i + 2] then
      conflicts[#conflicts + 1] = ARGV[i + 1]
      conflicts[#conflicts + 1] = current
    end
    i = i + 3
  elseif op == "version" then
    local current = redis.call("HGET", KEYS[1], "_version") or ""
    if current ~= ARGV[i + 1] then return {"stale", current} end
    i = i + 2
  elseif op == "unique" then
    local holder = redis.call("HGET", KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    if holder and holder ~= ARGV[i + 3] then
      return {"taken", ARGV[i + 1], ARGV[i + 2], holder}
    end
    i = i + 4
  else
    return redis.error_reply("repocket: unknown check " .. op)
  end
end
if #conflicts > 0 then
  table.insert(conflicts, 1, "conflict")
  return conflicts
end

i = i + 1
local deleted = 0
while i <= n do
  local op = ARGV[i]
  if op == "hset" then
    redis.call("HSET", KEYS[1], ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  elseif op == "bump" then
    redis.call("HINCRBY", KEYS[1], "_version", 1)
    i = i + 1
  elseif op == "hdel" then
    redis.call("HDEL", KEYS[1], ARGV[i + 1])
    i = i + 2
  elseif op == "set" then
    redis.call("SET", KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    i = i + 3
  elseif op == "del" then
    deleted = deleted + redis.call("DEL", KEYS[tonumber(ARGV[i + 1])])
    i = i + 2
  elseif op == "sadd" then
    redis.call("SADD", KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    i = i + 3
  elseif op == "srem" then
    redis.call("SREM", KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    i = i + 3
  elseif op == "zadd" then
    redis.call("ZADD", KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == "zrem" then
    redis.call("ZREM", KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2])
    i = i + 3
  elseif op == "uset" then
    redis.call("HSET", KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == "udel" then
    local k = KEYS[tonumber(ARGV[i + 1])]
    if redis.call("HGET", k, ARGV[i + 2]) == ARGV[i + 3] then
      redis.call("HDEL", k, ARGV[i + 2])
    end
    i = i + 4
  else
    return redis.error_reply("repocket: unknown write " .. op)
  end
end
return {"ok", deleted}
