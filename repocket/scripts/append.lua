-- repocket: append to a ByteStream, only while its record exists.
-- KEYS[1] the record hash, KEYS[2] the ByteStream string; ARGV[1] the bytes.
-- Returns the string's new length, or -1 when the record is gone (nothing written).
if redis.call("EXISTS", KEYS[1]) == 0 then return -1 end
local have = redis.call("TYPE", KEYS[2])["ok"]
if have ~= "none" and have ~= "string" then
  return redis.error_reply("WRONGTYPE " .. KEYS[2] .. " is a " .. have)
end
return redis.call("APPEND", KEYS[2], ARGV[1])
