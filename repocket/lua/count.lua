-- repocket: count a model's records in sets, leaving out those past their deadline.
--
-- For an expiring model (Meta.ttl) a record past its deadline is gone at once,
-- but its ids stay in the id set and indexes until a purge removes them (see
-- repocket/plan/expiry.py). ARGV[1] is the number of groups; then, per group,
-- the number n of its sets. KEYS are, per group, the partition's expiry sorted
-- set then its n sets. Returns the sum of the sets' sizes, less the ids each
-- holds whose deadline is before now (the server's clock, as the keys' TTLs).
local now = redis.call("TIME")
local bound = "(" .. (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local total, k = 0, 1
for g = 1, tonumber(ARGV[1]) do
  local expiry = KEYS[k]
  local due = redis.call("ZRANGEBYSCORE", expiry, "-inf", bound)
  for s = 1, tonumber(ARGV[1 + g]) do
    local set = KEYS[k + s]
    total = total + redis.call("SCARD", set)
    for _, id in ipairs(due) do
      total = total - redis.call("SISMEMBER", set, id)
    end
  end
  k = k + 1 + tonumber(ARGV[1 + g])
end
return total
