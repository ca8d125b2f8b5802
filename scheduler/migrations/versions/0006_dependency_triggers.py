"""dependency triggers: when a job ends, its dependents move on in the same transaction

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 12:00:00.000000

One AFTER UPDATE OF state trigger on jobs, for rows that become SUCCEEDED, DEAD or CANCELLED,
covers every path that ends a job (executor outcomes, CancelJob, lease rescue, the timeout
backstop, a release while a cancel is requested, cascades of this very trigger):

- no dependents: one probe of ix_job_dependencies_depends_on, nothing else;
- SUCCEEDED: every dependent's pending_dependencies is decremented; the WAITING ones that reach
  0 become QUEUED (run_at moved up to now: "eligible since"), or SCHEDULED while their run_at is
  ahead, each with its job_events row, and `jobsched_work` is notified so that every replica's
  dispatcher wakes (and `jobsched_jobs` with their ids, for the watchers of every replica);
- DEAD or CANCELLED: every WAITING job that depends on it, directly or through other WAITING
  jobs, is CANCELLED with its event (the reason names the dependency). The cascade's own
  cancellations fire the trigger again, one level down, and find nothing left to do.

The time of the cascaded changes is the ended job's updated_at: the triggering statement's
`now`, so the store's injected clock holds for them too. Dependents other than WAITING (a job a
client retried by hand) only get their counter decremented: dependencies gate WAITING jobs.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every statement below is driven by `id = ANY(array)` or `depends_on = ...` lookups, so that
# its plan is an index scan whatever the statistics say (a join of jobs with job_dependencies
# would be planned as a hash join over a sequential scan of jobs while the tables are young).
_FUNCTION = """
CREATE FUNCTION jobs_resolve_dependents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := NEW.updated_at;
    v_dependents uuid[];
    v_ready uuid[];
    v_direct uuid[];
    v_closure uuid[];
    v_level uuid[];
    v_chunk integer;
BEGIN
    SELECT array_agg(job_id) INTO v_dependents FROM job_dependencies WHERE depends_on = NEW.id;
    IF v_dependents IS NULL THEN
        RETURN NULL;  -- the common case: nobody waits for this job
    END IF;
    IF NEW.state = 'succeeded' THEN
        WITH counted AS (
            UPDATE jobs SET pending_dependencies = pending_dependencies - 1
            WHERE id = ANY(v_dependents) AND pending_dependencies > 0
            RETURNING id, state, pending_dependencies
        )
        SELECT array_agg(id) INTO v_ready
        FROM counted WHERE state = 'waiting' AND pending_dependencies = 0;
        IF v_ready IS NOT NULL THEN
            WITH promoted AS (
                UPDATE jobs SET
                    state = CASE WHEN run_at > v_now THEN CAST('scheduled' AS job_state)
                                 ELSE CAST('queued' AS job_state) END,
                    run_at = GREATEST(run_at, v_now),
                    updated_at = v_now, event_seq = event_seq + 1
                WHERE id = ANY(v_ready) AND state = 'waiting' AND pending_dependencies = 0
                RETURNING id, event_seq, state, attempt
            )
            INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, reason, actor,
                                    created_at)
            SELECT id, event_seq, CAST('waiting' AS job_state), state, attempt,
                   'dependencies succeeded (the last: ' || NEW.id || ')', 'scheduler', v_now
            FROM promoted;
            PERFORM pg_notify('jobsched_work', '');
            -- Watchers on every replica (jobsched_jobs: at most 200 ids per notification).
            FOR v_chunk IN 0 .. (cardinality(v_ready) - 1) / 200 LOOP
                PERFORM pg_notify('jobsched_jobs', array_to_string(
                    v_ready[v_chunk * 200 + 1 : (v_chunk + 1) * 200], ','));
            END LOOP;
        END IF;
        RETURN NULL;
    END IF;
    -- DEAD or CANCELLED: the WAITING jobs downstream, level by level, then one UPDATE for all
    -- of them (so that the cancellations' own firings of this trigger find nothing to do).
    v_closure := '{}';
    v_level := v_dependents;
    LOOP
        SELECT array_agg(id) INTO v_level
        FROM jobs WHERE id = ANY(v_level) AND state = 'waiting' AND NOT (id = ANY(v_closure));
        EXIT WHEN v_level IS NULL;
        v_closure := v_closure || v_level;
        IF v_direct IS NULL THEN
            v_direct := v_level;
        END IF;
        SELECT array_agg(DISTINCT job_id) INTO v_level
        FROM job_dependencies WHERE depends_on = ANY(v_level);
        EXIT WHEN v_level IS NULL;
    END LOOP;
    IF v_direct IS NULL THEN
        RETURN NULL;
    END IF;
    WITH cancelled AS (
        UPDATE jobs SET state = 'cancelled', finished_at = v_now, lease_expires_at = NULL,
            updated_at = v_now, event_seq = event_seq + 1
        WHERE id = ANY(v_closure) AND state = 'waiting'
        RETURNING id, event_seq, attempt
    )
    INSERT INTO job_events (job_id, seq, from_state, to_state, attempt, reason, actor,
                            created_at)
    SELECT id, event_seq, CAST('waiting' AS job_state), CAST('cancelled' AS job_state), attempt,
           CASE WHEN id = ANY(v_direct) THEN 'dependency ' ELSE 'upstream dependency ' END
               || NEW.id || ' ended ' || upper(CAST(NEW.state AS text)),
           'scheduler', v_now
    FROM cancelled;
    FOR v_chunk IN 0 .. (cardinality(v_closure) - 1) / 200 LOOP
        PERFORM pg_notify('jobsched_jobs', array_to_string(
            v_closure[v_chunk * 200 + 1 : (v_chunk + 1) * 200], ','));
    END LOOP;
    RETURN NULL;
END
$$
"""

_TRIGGER = """
CREATE TRIGGER jobs_resolve_dependents AFTER UPDATE OF state ON jobs
FOR EACH ROW
WHEN (NEW.state IN ('succeeded', 'dead', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
EXECUTE FUNCTION jobs_resolve_dependents()
"""


def upgrade() -> None:
    op.execute(_FUNCTION)
    op.execute(_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_resolve_dependents ON jobs")
    op.execute("DROP FUNCTION jobs_resolve_dependents()")
