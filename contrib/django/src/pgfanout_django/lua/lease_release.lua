-- lease_release.lua: give a lease back without storing, e.g. when the database read failed,
-- so the next misser need not wait for the lease to expire (see the README, "Leases").
--
-- KEYS[1]  the lease key L
-- ARGV[1]  the token the caller passed to lease_get.lua
--
-- Returns  1  released; 0  it was no longer the caller's (invalidated, expired, taken over)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
