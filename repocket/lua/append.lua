-- repocket: append to a ByteStream, only while its record exists.
-- KEYS[1] the record hash, KEYS[2] the ByteStream string; ARGV[1] the bytes.
-- Returns the string's new length, or -1 when the record is gone (nothing written).
-- APPEND is the first write, and PEXPIRE of a string cannot fail: a failure writes nothing.
local record = redis.call("TYPE", KEYS[1])["ok"]
if record == "none" then return -1 end
-- a record key that is not a hash is not a record: appending would give it a stream
if record ~= "hash" then
  return redis.error_reply("WRONGTYPE " .. KEYS[1] .. " is a " .. record)
end
local have = redis.call("TYPE", KEYS[2])["ok"]
if have ~= "none" and have ~= "string" then
  return redis.error_reply("WRONGTYPE " .. KEYS[2] .. " is a " .. have)
end
-- A record that expires: its strings expire with it (see expire in write.lua).
if past_deadline(KEYS[1]) then return -1 end  -- gone
local left = redis.call("PTTL", KEYS[1])
local length = redis.call("APPEND", KEYS[2], ARGV[1])
if left > 0 then redis.call("PEXPIRE", KEYS[2], left) end
return length
