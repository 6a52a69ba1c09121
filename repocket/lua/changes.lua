-- repocket: the change stream and history of a record (Meta.changes, Meta.history), written by the
-- write script in the same call as the record (repocket/io/scripts.py puts this text in front of it).
--
-- A change entry (XADD to the partition's <prefix>:_changes) has the fields
--   op        create, update, delete, incr or append
--   id, key   the record's id and hash key
--   revision  the record's revision: 1, 2, 3... (HINCRBY <prefix>:_revisions id), kept after a delete
--   at        the server's time, in milliseconds since the epoch
--   actor     who made the change (repocket.actor), or ""
--   new:<f>   the new stored value of each hash field that changed (absent: the field is gone)
--   old:<f>   its previous stored value (absent: it had none)
--   stream:<f> the new value of a ByteStream the write set ("" when emptied), or
--   append:<f> the bytes an append added
-- A write that changes nothing stored (a save of unchanged values) records nothing.
--
-- Trimming is exact, so that a reader can tell what it missed: before the
-- XADD the entries it removes are found, and the newest of them is kept in
-- the hash <prefix>:_trimmed (field id); a read that starts before it raises
-- ChangesTrimmedError.
--
-- The history of a record (Meta.history = N) is a stream <prefix>:_history:<id>
-- of at most N entries: revision, at, actor, op, then the record's hash fields
-- after the write (none after a delete).

-- A hash as a table of field -> value (nil when it does not exist).
local function snapshot(hash)
  if redis.call("EXISTS", hash) == 0 then return nil end
  local flat = redis.call("HGETALL", hash)
  local out = {}
  for n = 1, #flat, 2 do out[flat[n]] = flat[n + 1] end
  return out
end

-- The server's clock, in milliseconds since the epoch.
local function now_ms()
  local now = redis.call("TIME")
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end

-- Trim the stream by its policy before an entry is added, keeping the newest id removed.
local function trim(c, ms)
  if c.trim == "maxlen" then
    local over = redis.call("XLEN", c.stream) - c.limit + 1
    if over > 0 then
      local gone = redis.call("XRANGE", c.stream, "-", "+", "COUNT", over)
      redis.call("HSET", c.trimmed, "id", gone[#gone][1])
      redis.call("XTRIM", c.stream, "MAXLEN", c.limit - 1)
    end
  elseif c.trim == "minid" then
    local minid = string.format("%d", ms - c.limit)
    local gone = redis.call("XREVRANGE", c.stream, "(" .. minid .. "-0", "-", "COUNT", 1)
    if #gone > 0 then
      redis.call("HSET", c.trimmed, "id", gone[1][1])
      redis.call("XTRIM", c.stream, "MINID", minid)
    end
  end
end

-- What a change entry needs of a record's hash before its writes, given the
-- record's write ops (ARGV[from] up to ARGV[stop]): the fields they set or
-- delete (from ``guarded``, the values its guard checks found, when each of
-- them was guarded; else HMGET), or the whole hash when the writes delete it
-- or a history keeps whole versions (HGETALL). nil when the hash does not exist.
local function before_writes(c, hash, present, from, stop, arity, guarded)
  if not present then return nil end
  local names, whole, known = {}, c.history ~= false, true
  local j = from
  while j < stop do
    local op = ARGV[j]
    if op == "hset" or op == "hdel" then
      names[#names + 1] = ARGV[j + 1]
      if guarded[ARGV[j + 1]] == nil then known = false end
    elseif op == "del" and ARGV[j + 1] == "1" then whole = true end
    j = j + arity[op]
  end
  if whole then return snapshot(hash) end
  local out = {}
  if known then
    -- every field written was guarded: the check phase saw its stored value (false: absent)
    for _, name in ipairs(names) do if guarded[name] then out[name] = guarded[name] end end
  elseif #names > 0 then
    local values = redis.call("HMGET", hash, unpack(names))
    for n, name in ipairs(names) do if values[n] then out[name] = values[n] end end
  end
  return out
end

-- Record what a write did to one record: ``before`` is (what the entry needs
-- of) its hash before the write, nil when it did not exist; ``after`` the same
-- fields after it (the writes applied to ``before``), nil when it is gone;
-- ``extra`` the ByteStream fields of the entry.
local function log_change(c, hash, before, after, extra)
  local op = c.op
  if op == "" then
    if after == nil and before == nil then return end
    if after == nil then op = "delete" elseif before == nil then op = "create" else op = "update" end
  end
  local changed = {}
  for f, v in pairs(after or {}) do
    if (before == nil or before[f] ~= v) and string.sub(f, 1, 1) ~= "_" then changed[#changed + 1] = f end
  end
  for f, _ in pairs(before or {}) do
    if (after == nil or after[f] == nil) and string.sub(f, 1, 1) ~= "_" then changed[#changed + 1] = f end
  end
  if #changed == 0 and #extra == 0 and op ~= "create" and op ~= "delete" then return end
  table.sort(changed)
  local ms = now_ms()
  local revision = redis.call("HINCRBY", c.revisions, c.id, 1)
  local entry = {"op", op, "id", c.id, "key", hash, "revision", revision, "at", string.format("%d", ms),
                 "actor", c.actor}
  for _, f in ipairs(changed) do
    if after and after[f] then entry[#entry + 1] = "new:" .. f; entry[#entry + 1] = after[f] end
    if before and before[f] then entry[#entry + 1] = "old:" .. f; entry[#entry + 1] = before[f] end
  end
  for n = 1, #extra do entry[#entry + 1] = extra[n] end
  if c.stream then
    trim(c, ms)
    redis.call("XADD", c.stream, "*", unpack(entry))
  end
  if c.history then
    local version = {"revision", revision, "at", string.format("%d", ms), "actor", c.actor, "op", op}
    for f, v in pairs(after or {}) do
      if string.sub(f, 1, 1) ~= "_" then version[#version + 1] = f; version[#version + 1] = v end
    end
    redis.call("XADD", c.history, "MAXLEN", c.keep, "*", unpack(version))
  end
end
