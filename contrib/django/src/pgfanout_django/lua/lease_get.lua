-- lease_get.lua: read a cache key, or take its lease on a miss (pgfanout's fill protocol; see
-- the README, "Leases").  One round trip, so no other client can fill or lease in between.
--
-- KEYS[1]  the cache key K
-- KEYS[2]  its lease key L (pgfanout's redis.lease_suffix and redis.lease_layout name it)
-- ARGV[1]  the caller's token: fresh random bytes per miss, e.g. 16 bytes in hex
-- ARGV[2]  the lease's time to live in milliseconds: longer than a database read, short
--          enough that a crashed filler holds nobody up for long (e.g. 3000)
--
-- Returns  {1, value}    K holds a value: a hit (it may have been filled meanwhile)
--          {2}           a miss, and the caller now holds the lease: read the database,
--                        then store with lease_fill.lua
--          {3, pttl}     a miss while another caller holds the lease, for pttl more ms:
--                        wait briefly and read again, or read through without storing
local value = redis.call('GET', KEYS[1])
if value then
  return {1, value}
end
-- SET ... NX answers nil (false in Lua) when L exists: someone else is filling.
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {2}
end
return {3, redis.call('PTTL', KEYS[2])}
