-- repocket: write a batch of records atomically: all of it, or nothing.
--
-- Every save, delete and bulk operation is one call of this script. Each
-- record's checks run before any record's writes, so a batch that would fail
-- anywhere (a key of the wrong type, a record changed under the caller, a
-- unique value taken, a stale version, a stored value a write command would
-- fail on) writes nothing at all. Redis does not roll back a script that
-- fails halfway, so the check phase also checks everything the write phase
-- will use.
--
-- ARGV[1] the number of records, ARGV[2] the caller's lease token (random,
-- one per write). Then, for each record:
--   <nkeys> <types> <nchecks> <nwrites> <check args...> <write args...>
-- where the record's keys are the next <nkeys> of KEYS (its first one is the
-- record hash, its second the record's lease <prefix>:_lease:<id>), <types>
-- has one letter per key for the type it must have if it exists (h hash,
-- s set, z sorted set, t string), and key numbers <k> in the ops count from 1
-- within the record's own keys. Counts, not separators, delimit the ops, so no
-- value can be mistaken for one.
--
-- checks:  exists                      the hash must exist, else {"missing"}
--          guard   <field> <expected>  HGET must equal expected, else
--                                      {"conflict", field, current, ...}, where
--                                      current is nil when the field is absent
--          absent  <field>             the field must not exist, else a conflict
--          unique  <k> <token> <id>    HGET key k token must be absent or id,
--                                      else {"taken", k, token, holder}; and no
--                                      other record of the batch may claim it,
--                                      else {"clash", k, token, other id}
--          version <expected>          the hash's _version must equal expected
--                                      ("" = absent), else {"stale", current}
--          fenced  <k> <generation>    the set k (the record's revoked claim
--                                      generations) must not hold generation,
--                                      else {"revoked", generation}: a unique
--                                      value's claim this write relies on was
--                                      revoked (repocket/plan/claims.py)
--          new                         the record's own keys (its hash and its
--                                      strings: lease, ByteStreams) must not
--                                      exist, else {"present"}; the caller sends
--                                      it for an id it has just generated, and
--                                      plans again without it when refused
--          count   <k> <n>             the set k must have n members, and
--          member  <k> <id>            hold id, else {"referred", k}: the records
--                                      pointing at a record being deleted are
--                                      still those its delete was planned for
--          target  <k> <l>             the hash k (a Pointer's target) must
--                                      exist (and not be past its deadline),
--                                      else {"dangling", k}, and its
--                                      lease l must not be another writer's,
--                                      else {"leased"} (its delete holds it)
--          alive                       the hash must not have expired, else
--                                      {"expired"}: its key's TTL is its
--                                      deadline plus GRACE_MS (see expire), so
--                                      a TTL under GRACE_MS is a record past
--                                      its deadline, which the caller purges
--          due                         the hash, if it exists, must be past its
--                                      deadline, else {"notdue"} (a purge meets
--                                      a record saved anew since it read it)
-- writes:  hset <field> <value> | hdel <field> | set <k> <value> | del <k> | bump (_version + 1)
--          sadd <k> <member> | srem <k> <member>
--          zadd <k> <score> <member> | zrem <k> <member>
--          uset <k> <token> <id> | udel <k> <token> <id> (only while held by id)
--          expire <k> <ms> <id>        the record expires ms milliseconds from
--                                      now (the server's clock): the sorted set
--                                      k scores id by that deadline, and the
--                                      hash's TTL is the deadline plus GRACE_MS
--                                      (the values stay readable for a purge)
--          persist <k> <id>            the record never expires: ZREM, PERSIST
--          follow <k>                  the string k (a ByteStream) expires with
--                                      the hash: its TTL, or none (after SET)
--          append <k> <bytes>          APPEND to the string k (a ByteStream)
--          change <ks> <kr> <kt> <kh> <id> <actor> <op> <trim> <limit> <keep>
--                                      record the write in the change stream ks
--                                      and the history stream kh (0: none), with
--                                      the revision counter hash kr and the trim
--                                      point hash kt; op is the entry's op, or
--                                      "" to tell create/update/delete from the
--                                      hash; trim is none, maxlen (limit entries)
--                                      or minid (limit ms of age); keep is the
--                                      history's length (changes.lua)
--
-- Other refusals: {"wrongtype", key, type}; {"corrupt", field, problem, value}
-- (a stored value a write would fail on); {"leased"} (another writer holds the
-- record's lease: wait and call again); {"present"} (see new).
--
-- A delete refused because the records pointing at one it deletes changed
-- ({"referred"}) gets the same lease on that record as a guard miss does:
-- while it holds it, a save setting a Pointer to the record waits (the target
-- check), so the delete planned again from the index sets meets no change.
--
-- Leases. A guard miss returns the current values, and the caller plans again
-- from them; under contention another writer may change them again in
-- between, for ever. So a call refused for guard misses only gives the caller
-- a lease on each record that missed (SET NX PX 2000, its token as the value).
-- While a lease is held, every other writer's call touching the record is
-- refused with {"leased"}, so the holder's next call, planned from the values
-- returned, meets no guard miss; that call deletes the lease. A call that
-- meets another writer's lease grants none, so a caller holding leases never
-- waits for a lease whose holder waits for it (no deadlock). Any other refusal
-- releases the caller's leases (it will not retry). A holder that crashed
-- loses its lease when the 2 seconds are up.
--
-- Returns {"ok", <keys deleted by del, per record>...}, or
-- {"refused", <record number>, <its refusal>, ...} having written nothing but
-- the leases described above.

local LEASE_MS = 2000
local letters = {h = "hash", s = "set", z = "zset", t = "string", x = "stream"}
local check_arity = {exists = 1, guard = 3, absent = 2, unique = 4, version = 2, new = 1, fenced = 3,
                     count = 3, member = 3, target = 3, alive = 1, due = 1}
local write_arity = {hset = 3, hdel = 2, bump = 1, set = 3, del = 2, sadd = 3, srem = 3,
                     zadd = 4, zrem = 3, uset = 4, udel = 4, expire = 4, persist = 3, follow = 2, append = 3,
                     change = 11}
local token = ARGV[2]

-- A ZADD score repocket writes: a finite decimal number, or +inf / -inf.
local function valid_score(text)
  if text == "+inf" or text == "-inf" then return true end
  local n = string.match(text, "^%-?%d+%.?%d*[eE]?[-+]?%d*$") and tonumber(text)
  return n ~= nil and n == n and n ~= math.huge and n ~= -math.huge
end

-- Every op must be known, within the record's args, and name one of the
-- record's keys, so that no write can fail halfway on a malformed plan.
-- Notes whether the record reads (version) or bumps its version counter.
-- Messages quote no argument: a misaligned one may be a (secret) value.
local function preflight(rec)
  local j = rec.checks
  while j < rec.writes do
    local n = check_arity[ARGV[j]]
    if not n then return "unknown check at argument " .. j end
    if ARGV[j] == "version" then rec.versioned = true end
    if ARGV[j] == "new" then rec.new = true end
    if ARGV[j] == "unique" or ARGV[j] == "fenced" or ARGV[j] == "count" or ARGV[j] == "member"
        or ARGV[j] == "target" then
      local k = tonumber(ARGV[j + 1])
      if not k or k < 1 or k > rec.nkeys then return "bad key number in " .. ARGV[j] end
    end
    if ARGV[j] == "target" then
      local l = tonumber(ARGV[j + 2])
      if not l or l < 1 or l > rec.nkeys then return "bad key number in target" end
    end
    j = j + n
  end
  if j ~= rec.writes then return "the checks overrun their count" end
  while j < rec.stop do
    local op = ARGV[j]
    local n = write_arity[op]
    if not n then return "unknown write at argument " .. j end
    if op == "bump" then
      rec.versioned, rec.bump = true, true
    elseif op == "change" then
      for m = 1, 4 do
        local k = tonumber(ARGV[j + m])
        if not k or k < 0 or k > rec.nkeys or k % 1 ~= 0 or (m == 2 and k == 0) then
          return "bad key number in change"
        end
      end
      local trim = ARGV[j + 8]
      if trim ~= "none" and trim ~= "maxlen" and trim ~= "minid" then return "bad trim policy in change" end
      if not string.match(ARGV[j + 9], "^%d+$") or not string.match(ARGV[j + 10], "^%d+$") then
        return "bad trim limit or history length in change"
      end
      if rec.change then return "two change ops" end
      rec.change = j
    elseif op ~= "hset" and op ~= "hdel" then
      local k = tonumber(ARGV[j + 1])
      if not k or k < 1 or k > rec.nkeys or k % 1 ~= 0 then return "bad key number in " .. op end
      -- (the score is not quoted: it may stand for a secret value)
      if op == "zadd" and not valid_score(ARGV[j + 2]) then return "a zadd score is not a number" end
      if op == "expire" and not string.match(ARGV[j + 2], "^[1-9]%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?%d?$") then
        return "an expire time is not a whole number of milliseconds"
      end
    end
    j = j + n
  end
  if j ~= rec.stop then return "the writes overrun their count" end
  return nil
end

local records = {}
local i, base = 3, 0
for r = 1, tonumber(ARGV[1]) do
  local nkeys, nchecks, nwrites = tonumber(ARGV[i]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local first = i + 4
  local rec = {base = base, nkeys = nkeys, types = ARGV[i + 1], guarded = {},
               checks = first, writes = first + nchecks, stop = first + nchecks + nwrites}
  if nkeys < 2 or #rec.types ~= nkeys or base + nkeys > #KEYS or rec.stop - 1 > #ARGV then
    return redis.error_reply("repocket: malformed write plan for record " .. r)
  end
  local problem = preflight(rec)
  if problem then return redis.error_reply("repocket: record " .. r .. ": " .. problem) end
  records[r] = rec
  base = base + nkeys
  i = rec.stop
end

local typed = {}  -- keys whose type this call has checked already
-- A record whose id was just generated: one EXISTS of its own keys replaces
-- their type checks, the lease lookup and the hash reads. None exists, so no
-- lease is held on it, no field is stored and any type will do. True when so.
local function fresh(rec)
  local own = {KEYS[rec.base + 1]}
  for k = 2, rec.nkeys do
    if string.sub(rec.types, k, k) == "t" then own[#own + 1] = KEYS[rec.base + k] end
  end
  if redis.call("EXISTS", unpack(own)) > 0 then return false end
  typed[own[1]] = "hash"
  for k = 2, #own do typed[own[k]] = "string" end
  return true
end

local function check(rec)
  local hash, lease = KEYS[rec.base + 1], KEYS[rec.base + 2]
  local holder, present
  if rec.new then
    if not fresh(rec) then return {"present"} end
    rec.holds, present = false, false
  else
    -- Each key must hold the type repocket keeps there (or not exist): a write
    -- command on a key of another type fails. The lease first: whether the
    -- caller holds it decides what a refusal does with it.
    -- (one GET reads the holder and checks the type: it fails on a key of another type)
    local got = redis.pcall("GET", lease)
    if type(got) == "table" and got.err then return {"wrongtype", lease, redis.call("TYPE", lease)["ok"]} end
    typed[lease] = "string"
    holder = lease_holder(lease, got)
    rec.holds = holder == token
  end
  for k = 1, rec.nkeys do
    local key = KEYS[rec.base + k]
    local want = letters[string.sub(rec.types, k, k)]
    if typed[key] ~= want then
      local kind = redis.call("TYPE", key)["ok"]
      if kind ~= "none" and kind ~= want then return {"wrongtype", key, kind} end
      typed[key] = want
      if k == 1 and present == nil then present = kind ~= "none" end  -- (no EXISTS needed)
    end
  end
  -- Another writer's lease: it is about to write this record (see Leases).
  if holder and not rec.holds then return {"leased"} end
  if present == nil then present = redis.call("EXISTS", hash) == 1 end
  rec.present = present
  -- The version counter must be one HINCRBY can add to and the client can read.
  if rec.versioned and present then
    local raw = redis.call("HGET", hash, "_version")
    local problem = version_problem(raw, rec.bump)
    if problem then return {"corrupt", "_version", problem, string.sub(raw, 1, 64)} end
  end
  -- So must the record's revision counter, which a change op adds to after the writes (changes.lua).
  if rec.change then
    local revisions = KEYS[rec.base + tonumber(ARGV[rec.change + 2])]
    local raw = redis.call("HGET", revisions, ARGV[rec.change + 5])
    local problem = version_problem(raw, true)
    if problem then return {"corrupt", "revision in " .. revisions, problem, string.sub(raw, 1, 64)} end
  end
  local conflicts = {}
  local j = rec.checks
  while j < rec.writes do
    local op = ARGV[j]
    if op == "new" then
      -- (checked above)
    elseif op == "exists" then
      if not present then return {"missing"} end
    elseif op == "guard" or op == "absent" then
      -- false (a nil reply) when the field is absent
      local current = present and redis.call("HGET", hash, ARGV[j + 1])
      if current ~= (op == "guard" and ARGV[j + 2]) then
        conflicts[#conflicts + 1] = ARGV[j + 1]
        conflicts[#conflicts + 1] = current
      end
      rec.guarded[ARGV[j + 1]] = current
    elseif op == "fenced" then
      if redis.call("SISMEMBER", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2]) == 1 then
        return {"revoked", ARGV[j + 2]}
      end
    elseif op == "count" or op == "member" then
      -- the index set still holds the referrers the delete was planned for
      local set = KEYS[rec.base + tonumber(ARGV[j + 1])]
      local same
      if op == "count" then
        same = redis.call("SCARD", set) == tonumber(ARGV[j + 2])
      else
        same = redis.call("SISMEMBER", set, ARGV[j + 2]) == 1
      end
      if not same then return {"referred", ARGV[j + 1]} end
    elseif op == "alive" then
      if present and past_deadline(hash) then return {"expired"} end
    elseif op == "due" then
      if present and not past_deadline(hash) then return {"notdue"} end
    elseif op == "target" then
      local target = KEYS[rec.base + tonumber(ARGV[j + 1])]
      if redis.call("EXISTS", target) == 0 or past_deadline(target) then
        return {"dangling", ARGV[j + 1]}
      end
      local deleter = lease_holder(KEYS[rec.base + tonumber(ARGV[j + 2])])
      if deleter and deleter ~= token then return {"leased"} end
    elseif op == "unique" then
      local holder_id = redis.call("HGET", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
      if holder_id and holder_id ~= ARGV[j + 3] then
        return {"taken", ARGV[j + 1], ARGV[j + 2], holder_id}
      end
    else  -- version
      local current = present and redis.call("HGET", hash, "_version") or ""
      if current ~= ARGV[j + 1] then return {"stale", current} end
    end
    j = j + check_arity[op]
  end
  if #conflicts > 0 then
    table.insert(conflicts, 1, "conflict")
    return conflicts
  end
  return nil
end

local claims = {}  -- unique tokens claimed earlier in this batch: token -> id
local function claim(rec)
  local j = rec.checks
  while j < rec.writes do
    if ARGV[j] == "unique" then
      local slot = KEYS[rec.base + tonumber(ARGV[j + 1])] .. "\0" .. ARGV[j + 2]
      if claims[slot] and claims[slot] ~= ARGV[j + 3] then
        return {"clash", ARGV[j + 1], ARGV[j + 2], claims[slot]}
      end
      claims[slot] = ARGV[j + 3]
    end
    j = j + check_arity[ARGV[j]]
  end
  return nil
end

local refused = {}
local only_conflicts, met_lease = true, false
for r, rec in ipairs(records) do
  local refusal = check(rec) or claim(rec)
  if refusal then
    rec.refusal = refusal[1]
    if refusal[1] == "leased" then met_lease = true
    elseif refusal[1] ~= "conflict" and refusal[1] ~= "referred" then only_conflicts = false end
    refused[#refused + 1] = r
    refused[#refused + 1] = refusal
  end
end
if #refused > 0 then
  for _, rec in ipairs(records) do
    local lease = KEYS[rec.base + 2]
    if not only_conflicts then
      -- another refusal: the caller raises or plans anew, so it lets the others write
      if rec.holds then redis.call("DEL", lease) end
    elseif not met_lease and (rec.refusal == "conflict" or rec.refusal == "referred") then
      if rec.holds then
        redis.call("PEXPIRE", lease, LEASE_MS)  -- ours already: renew it
      else
        -- NX: a lease key without expiry (not repocket's, see lease_holder) is left alone
        redis.call("SET", lease, token, "PX", LEASE_MS, "NX")
      end
    end
  end
  table.insert(refused, 1, "refused")
  return refused
end

local out = {"ok"}
local deadline
-- The ByteStream name of a record's string key, for its change entry.
local function stream_name(key)
  return string.match(key, ":field:(.*)$") or key
end

for _, rec in ipairs(records) do
  local hash = KEYS[rec.base + 1]
  local deleted = 0
  local change, before, extra
  if rec.change then
    local c, k = rec.change, function(m) local n = tonumber(ARGV[rec.change + m]); return n > 0 and KEYS[rec.base + n] end
    change = {stream = k(1), revisions = k(2), trimmed = k(3), history = k(4), id = ARGV[c + 5],
              actor = ARGV[c + 6], op = ARGV[c + 7], trim = ARGV[c + 8], limit = tonumber(ARGV[c + 9]),
              keep = tonumber(ARGV[c + 10])}
    before = before_writes(change, hash, rec.present, rec.writes, rec.stop, write_arity, rec.guarded)
    extra = {}
  end
  -- the same fields after the writes (nil once the hash is deleted), kept as they are written
  local after
  if change then
    after = {}
    for f, v in pairs(before or {}) do after[f] = v end
  end
  local j = rec.writes
  while j < rec.stop do
    local op = ARGV[j]
    if change and (op == "set" or op == "append" or op == "del") and tonumber(ARGV[j + 1]) > 1
        and string.sub(rec.types, tonumber(ARGV[j + 1]), tonumber(ARGV[j + 1])) == "t" then
      local name = stream_name(KEYS[rec.base + tonumber(ARGV[j + 1])])
      extra[#extra + 1] = (op == "append" and "append:" or "stream:") .. name
      extra[#extra + 1] = op == "del" and "" or ARGV[j + 2]
    end
    if op == "change" then
      -- (logged once the record's writes are done)
    elseif op == "hset" then
      redis.call("HSET", hash, ARGV[j + 1], ARGV[j + 2])
      if after then after[ARGV[j + 1]] = ARGV[j + 2] end
    elseif op == "hdel" then
      redis.call("HDEL", hash, ARGV[j + 1])
      if after then after[ARGV[j + 1]] = nil end
    elseif op == "bump" then
      redis.call("HINCRBY", hash, "_version", 1)
    elseif op == "set" then
      redis.call("SET", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
    elseif op == "del" then
      deleted = deleted + redis.call("DEL", KEYS[rec.base + tonumber(ARGV[j + 1])])
      if ARGV[j + 1] == "1" then after = false end
    elseif op == "sadd" then
      redis.call("SADD", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
    elseif op == "srem" then
      redis.call("SREM", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
    elseif op == "zadd" then
      redis.call("ZADD", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2], ARGV[j + 3])
    elseif op == "zrem" then
      redis.call("ZREM", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
    elseif op == "uset" then
      redis.call("HSET", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2], ARGV[j + 3])
    elseif op == "expire" then
      local now = redis.call("TIME")
      deadline = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[j + 2])
      redis.call("ZADD", KEYS[rec.base + tonumber(ARGV[j + 1])], deadline, ARGV[j + 3])
      redis.call("PEXPIREAT", hash, deadline + GRACE_MS)
    elseif op == "persist" then
      redis.call("ZREM", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
      redis.call("PERSIST", hash)
    elseif op == "append" then
      redis.call("APPEND", KEYS[rec.base + tonumber(ARGV[j + 1])], ARGV[j + 2])
    elseif op == "follow" then
      local key = KEYS[rec.base + tonumber(ARGV[j + 1])]
      local left = redis.call("PTTL", hash)
      if left > 0 then redis.call("PEXPIRE", key, left) else redis.call("PERSIST", key) end
    else  -- udel (preflight admitted no other op)
      local key = KEYS[rec.base + tonumber(ARGV[j + 1])]
      if redis.call("HGET", key, ARGV[j + 2]) == ARGV[j + 3] then
        redis.call("HDEL", key, ARGV[j + 2])
      end
    end
    j = j + write_arity[op]
  end
  if change then log_change(change, hash, before, after or nil, extra) end
  if rec.holds then redis.call("DEL", KEYS[rec.base + 2]) end
  out[#out + 1] = deleted
end
return out
