-- How many events the agent sent before a task's result (TaskResult.events): the task's
-- log is complete once that many are stored (resent events may arrive after the result).
ALTER TABLE tasks ADD COLUMN events_expected bigint;
