"""dependents scheduled signal: jobs_resolve_dependents says when it made a job SCHEDULED

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 14:00:00.000000

A dependent whose run_at is still ahead becomes SCHEDULED when its last dependency succeeds.
The dispatchers set a timer for the SCHEDULED jobs they store themselves; these ones come from
the trigger, so its `jobsched_work` notification now carries the payload 'scheduled' when any of
the jobs it moved on is SCHEDULED: every replica then promotes at once, which reads the next
run_at and sets its timer (scheduler/dispatch/notify.py). Without it they waited for the
dispatcher's safety poll. The function is 0006's, with that one statement changed.
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOTIFY_0006 = "            PERFORM pg_notify('jobsched_work', '');\n"
_NOTIFY_0008 = """            PERFORM pg_notify('jobsched_work',
                CASE WHEN EXISTS (SELECT 1 FROM jobs
                                  WHERE id = ANY(v_ready) AND state = 'scheduled')
                     THEN 'scheduled' ELSE '' END);
"""


def _function_0006() -> str:
    path = Path(__file__).with_name("0006_dependency_triggers.py")
    spec = importlib.util.spec_from_file_location("jobsched_migration_0006", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function: str = module._FUNCTION
    assert function.count(_NOTIFY_0006) == 1, "0006's notification is not where it was"
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    op.execute(_function_0006().replace(_NOTIFY_0006, _NOTIFY_0008))


def downgrade() -> None:
    op.execute(_function_0006())
