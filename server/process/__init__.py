"""The process model: one serving process, the supervisor and its workers, their control pipes, metrics and logs."""
