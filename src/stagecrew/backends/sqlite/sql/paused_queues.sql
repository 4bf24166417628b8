-- The names of the paused queues.
SELECT queue FROM stagecrew_paused_queues
