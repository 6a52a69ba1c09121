-- repocket: settle a unique value's claim in the claimant's partition (see
-- repocket/plan/claims.py). KEYS[1] is the partition's unique hash of the
-- field (token -> id of the record holding it), KEYS[2] the claimant's set of
-- revoked generations. ARGV: <token> <claimant id> <generation>.
--
-- Returns "held" when the claimant's record holds the value (the claim is
-- real), else revokes the generation, so that a write of the claimant still
-- under way under that claim is refused ({"revoked"} from write.lua), and
-- returns "revoked": nobody holds the value in this partition, and nobody
-- can come to under that claim. Revocations live a day (REVOKED_MS), far
-- longer than a write can take to arrive.
local REVOKED_MS = 86400000
for _, key in ipairs(KEYS) do
  local kind = redis.call("TYPE", key)["ok"]
  if kind ~= "none" and kind ~= (key == KEYS[1] and "hash" or "set") then return {"wrongtype", key, kind} end
end
if redis.call("HGET", KEYS[1], ARGV[1]) == ARGV[2] then return "held" end
redis.call("SADD", KEYS[2], ARGV[3])
redis.call("PEXPIRE", KEYS[2], REVOKED_MS)
return "revoked"
