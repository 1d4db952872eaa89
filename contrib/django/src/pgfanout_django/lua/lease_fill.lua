-- lease_fill.lua: store a value read from the database, but only while the caller's lease
-- still stands (pgfanout's fill protocol; see the README, "Leases").
--
-- pgfanout deletes K and L in one command when a committed change invalidates K.  A reader
-- whose read may predate that change took its lease before the change committed, so that
-- delete either removed the lease (this script then refuses) or came after the store (and
-- removed the stale value).  Either way nothing stale stays cached.
--
-- KEYS[1]  the cache key K
-- KEYS[2]  its lease key L
-- ARGV[1]  the token the caller passed to lease_get.lua
-- ARGV[2]  the value to store
-- ARGV[3]  the value's time to live in milliseconds; 0 stores it without expiry
--
-- Returns  1  stored, and the lease released
--          0  refused: the lease was deleted by an invalidation, expired, or is another
--             caller's now.  Use the value read, but do not cache it.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
redis.call('DEL', KEYS[2])
return 1
