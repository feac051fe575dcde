-- presence: set an agent's presence (ready, not_ready, offline) and its reason ("" = none).
-- KEYS[1]: the agent's hash; KEYS[2]: the set of agent ids
-- ARGV: presence, reason, agent id
local key = KEYS[1]
local version = tonumber(redis.call('HGET', key, 'version') or '0') + 1
redis.call('HSET', key, 'presence', ARGV[1], 'reason', ARGV[2], 'version', version)
redis.call('SADD', KEYS[2], ARGV[3])
local f = redis.call('HMGET', key, 'sessions', 'units', 'voice', 'chat', 'email', 'manual')
local n = {}
for i = 1, 6 do n[i] = tonumber(f[i] or '0') end
return {'', ARGV[1], ARGV[2], n[1], n[2], n[3], n[4], n[5], n[6], version}
