-- repocket: the ids of one partition's records past their deadline, for a purge.
-- KEYS[1] the partition's expiry sorted set; ARGV[1] the most ids to return.
-- Only reads. Deadlines are compared with the server's clock, as the keys' TTLs are.
local now = redis.call("TIME")
local bound = "(" .. (tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
return redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", bound, "LIMIT", 0, tonumber(ARGV[1]))
