-- repocket: checks shared by the write and incr scripts (repocket/io/scripts.py
-- puts this text in front of theirs: Redis runs each script on its own).
--
-- Redis does not undo the writes a script made before a command in it failed,
-- so every value a write command will use is checked before the first write.

-- Why a stored _version cannot be used, or nil when it can. HINCRBY accepts
-- only a canonical integer (no sign, space or leading zero) and fails on
-- overflow; the client reads the counter as an int64. ``bump``: the write
-- phase adds 1 to it, so 2^63 - 1 is refused too.
local function version_problem(raw, bump)
  if not raw then return nil end  -- absent: HINCRBY starts it from 0
  if raw ~= "0" and not string.match(raw, "^[1-9]%d*$") then
    return "is not a plain non-negative integer"
  end
  if #raw < 19 then return nil end
  if #raw > 19 then return "is beyond 64 bits" end
  -- 19 digits: compare with 2^63 - 1 = 9223372036854775807 in two parts a Lua
  -- number holds exactly (string comparison would follow the server's locale)
  local high, low = tonumber(string.sub(raw, 1, 10)), tonumber(string.sub(raw, 11))
  if high > 9223372036 or (high == 9223372036 and low > 854775807) then
    return "is beyond 64 bits"
  end
  if bump and high == 9223372036 and low == 854775807 then
    return "is 2^63 - 1 and cannot be incremented"
  end
  return nil
end

-- The token of the writer holding a record's lease, or nil. A lease key
-- without an expiry was not set by repocket (every lease has PX): it is
-- ignored, so that it cannot block the record's writes for ever. ``got``:
-- the key's GET reply when the caller has read it already.
local function lease_holder(key, got)
  local holder = got
  if holder == nil then holder = redis.call("GET", key) end
  if holder and redis.call("PTTL", key) < 0 then return nil end
  return holder or nil
end

-- A record that expires (Meta.ttl) keeps its key GRACE_MS past its deadline,
-- so that a purge can still read the values naming its index entries; from
-- its deadline on, repocket treats it as gone. Whether ``key`` is in that
-- grace (a TTL under GRACE_MS), i.e. past its deadline. (repocket/plan/expiry.py
-- has the same number.)
local GRACE_MS = 3600000
local function past_deadline(key)
  local left = redis.call("PTTL", key)
  return left >= 0 and left < GRACE_MS
end
