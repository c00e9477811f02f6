-- Traces (docs/tracing.md): an outbox row keeps the W3C `traceparent` of the span that
-- emitted it, so its handler's span joins the same trace on whichever node claims it; an
-- invocation keeps its trace id, so the history can be matched with the exported trace.
-- Both are NULL for rows written without a trace. The bus notice stays as small as before.
ALTER TABLE outbox ADD COLUMN trace_context TEXT;
ALTER TABLE invocations ADD COLUMN trace_id TEXT;
