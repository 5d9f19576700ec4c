-- Synthetic runs for `python -m bench.run_listing`: :n agent runs (2% pending on an approval, 2% queued,
-- 4% failed and rolled back, 4% cancelled, the rest succeeded), 13-14 events each.
BEGIN;
INSERT INTO dbos.workflow_status (workflow_uuid, status, name, created_at, updated_at, executor_id, application_version, queue_name, recovery_attempts)
SELECT 'run-' || g,
       CASE WHEN g % 50 = 0 THEN 'PENDING' WHEN g % 50 = 1 THEN 'ENQUEUED' WHEN g % 25 = 2 THEN 'ERROR' WHEN g % 25 = 3 THEN 'CANCELLED' ELSE 'SUCCESS' END,
       'keel.agent_run',
       (extract(epoch FROM now()) * 1000)::bigint - (:n - g)::bigint * 60000,
       (extract(epoch FROM now()) * 1000)::bigint - (:n - g)::bigint * 60000 + 5000,
       'w1', 'keel-0.1', 'keel_runs', 1
FROM generate_series(1, :n) g;
INSERT INTO dbos.workflow_input (workflow_uuid, inputs)
SELECT 'run-' || g, json_build_object('positionalArgs', json_build_array(json_build_object('agent', CASE WHEN g % 10 = 0 THEN 'probe' ELSE 'billing' END,
       'input', 'Upgrade customer C-' || g || ' to the pro plan')), 'namedArgs', json_build_object())::text
FROM generate_series(1, :n) g;
INSERT INTO dbos.workflow_output (workflow_uuid, output)
SELECT 'run-' || g, '{"plan": "pro"}' FROM generate_series(1, :n) g WHERE g % 50 > 1 AND g % 25 NOT IN (2, 3);
INSERT INTO keel.events (run_id, step_id, kind, attempt, payload, created_at)
SELECT 'run-' || g, s, CASE WHEN s = 1 THEN 'run_started' WHEN s % 2 = 0 THEN 'llm_response' ELSE 'tool_result' END, 0,
       json_build_object('total_tokens', 100, 'cost_usd', 0.001, 'latency_ms', 20, 'turn', s / 2)::jsonb, now() - ((:n - g) || ' minutes')::interval
FROM generate_series(1, :n) g, generate_series(1, 13) s;
INSERT INTO keel.events (run_id, step_id, kind, attempt, payload, created_at)
SELECT 'run-' || g, 14, 'run_finished', 0, json_build_object('status', 'failed', 'reason', 'tool_failed', 'message', 'no')::jsonb, now()
FROM generate_series(1, :n) g WHERE g % 25 = 2;
INSERT INTO dbos.workflow_status (workflow_uuid, status, name, created_at, updated_at)
SELECT 'run-' || g || ':rollback', 'SUCCESS', 'keel.rollback', 0, 0 FROM generate_series(1, :n) g WHERE g % 25 IN (2, 3);
INSERT INTO keel.compensations (run_id, n, tool, idempotency_key, workflow_id, status)
SELECT 'run-' || g, 1, 'charge_customer', 'k' || g, 'run-' || g || ':compensate:1', 'succeeded' FROM generate_series(1, :n) g WHERE g % 25 IN (2, 3);
INSERT INTO keel.approvals (approval_id, run_id, step_id, tool, tool_call_id, arguments, status, expires_at)
SELECT 'run-' || g || ':approval:7', 'run-' || g, 7, 'charge_customer', 'c', '{}', 'pending', now() + interval '1 day' FROM generate_series(1, :n) g WHERE g % 50 = 0;
COMMIT;
ANALYZE;
