-- release: give back one held session by its id, with the channel and weight it was
-- reserved with (not the caller's): a retried release of the same session changes nothing.
-- KEYS[1]: the agent's hash; KEYS[2]: the agent's held sessions (session id -> "channel weight")
-- ARGV: session id
-- Returns {"", presence, reason, sessions, units, voice, chat, email, manual, version, 1 if released now else 0}.
local key = KEYS[1]
local f = redis.call('HMGET', key, 'presence', 'reason', 'sessions', 'units', 'voice', 'chat', 'email', 'manual', 'version')
local n = {}
for i = 3, 9 do n[i] = tonumber(f[i] or '0') end
local sessions, units, version = n[3], n[4], n[9]
local of = {voice = n[5], chat = n[6], email = n[7], manual = n[8]}
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry then
  return {'', f[1] or 'offline', f[2] or '', sessions, units, of.voice, of.chat, of.email, of.manual, version, 0}
end
local channel, weight = string.match(entry, '^(%a+) (%d+)$')
weight = tonumber(weight)
if of[channel] == nil or of[channel] < 1 or sessions < 1 or units < weight then
  return redis.error_reply('NOTHELD the counters do not hold session ' .. ARGV[1] .. ' (' .. entry .. ')')
end
sessions = sessions - 1
units = units - weight
of[channel] = of[channel] - 1
version = version + 1
redis.call('HSET', key, 'sessions', sessions, 'units', units, channel, of[channel], 'version', version)
redis.call('HDEL', KEYS[2], ARGV[1])
return {'', f[1] or 'offline', f[2] or '', sessions, units, of.voice, of.chat, of.email, of.manual, version, 1}
