-- reserve: take one session of a channel on an agent iff the capacity rules allow it, in
-- one atomic step (the rules of gateway/capacity.py `check`, in the same order).
-- KEYS[1]: the agent's hash (presence, reason, sessions, units, voice, chat, email, manual, version);
-- KEYS[2]: the set of agent ids; KEYS[3]: the agent's held sessions (session id -> "channel weight")
-- ARGV: channel, weight, channel_cap (-1: the profile does not cap the channel),
--       max_sessions, unit_limit, reserved_inbound, agent id, session id ("": anonymous)
-- A session id already held is granted again without counting it twice (a retried reserve).
-- Returns {reason or "", presence, reason of the presence, sessions, units, voice, chat, email, manual,
--          version, 1 if counted now else 0}.
local key = KEYS[1]
local channel = ARGV[1]
local weight = tonumber(ARGV[2])
local channel_cap = tonumber(ARGV[3])
local max_sessions = tonumber(ARGV[4])
local unit_limit = tonumber(ARGV[5])
local reserved_inbound = tonumber(ARGV[6])

local f = redis.call('HMGET', key, 'presence', 'reason', 'sessions', 'units', 'voice', 'chat', 'email', 'manual', 'version')
local presence = f[1] or 'offline'
local why = f[2] or ''
local n = {}
for i = 3, 9 do n[i] = tonumber(f[i] or '0') end
local sessions, units, version = n[3], n[4], n[9]
local of = {voice = n[5], chat = n[6], email = n[7], manual = n[8]}
if of[channel] == nil then
  return redis.error_reply('ERR unknown channel ' .. channel)
end

local sid = ARGV[8] or ''
if sid ~= '' and redis.call('HEXISTS', KEYS[3], sid) == 1 then
  return {'', presence, why, sessions, units, of.voice, of.chat, of.email, of.manual, version, 0}
end

local reason = ''
if presence == 'offline' then
  reason = 'agent_offline'
elseif channel ~= 'manual' and presence ~= 'ready' then
  reason = 'agent_not_ready'
elseif channel_cap >= 0 and of[channel] + 1 > channel_cap then
  reason = 'channel_at_capacity'
elseif sessions + 1 > max_sessions then
  reason = 'agent_at_capacity'
elseif units + weight > unit_limit then
  reason = 'agent_at_capacity'
elseif channel == 'manual' and max_sessions - (sessions + 1) < reserved_inbound then
  reason = 'agent_at_capacity'
end

if reason == '' then
  sessions = sessions + 1
  units = units + weight
  of[channel] = of[channel] + 1
  version = version + 1
  redis.call('HSET', key, 'sessions', sessions, 'units', units, channel, of[channel], 'version', version)
  redis.call('SADD', KEYS[2], ARGV[7])
  if sid ~= '' then
    redis.call('HSET', KEYS[3], sid, channel .. ' ' .. weight)
  end
  return {'', presence, why, sessions, units, of.voice, of.chat, of.email, of.manual, version, 1}
end
return {reason, presence, why, sessions, units, of.voice, of.chat, of.email, of.manual, version, 0}
