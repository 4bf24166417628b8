-- The names of the paused queues.
SELECT queue FROM {schema}.paused_queues
