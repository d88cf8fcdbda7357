--[[
  Take a waiter's ticket out of its pool's wait queue (it gave up: timeout, client gone).

  KEYS[1]  wait queue order ZSET: ticket -> enqueue time (us)
  KEYS[2]  wait queue deadlines ZSET: ticket -> deadline (epoch ms)

  ARGV[1]  ticket

  Output: 1 when the ticket was in the queue, 0 when it was not.
]]
--- @include "includes/time.lua"
--- @include "includes/queue.lua"

return leaveQueue(KEYS[1], KEYS[2], ARGV[1])
