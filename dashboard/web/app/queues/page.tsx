"use client";

import Link from "next/link";
import { useCallback, useEffect, useState } from "react";
import { api, ApiError, type Queue } from "@/lib/api";
import { useSession } from "@/lib/session";

function age(seconds: number | null): string {
  if (seconds === null) return "—";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

export default function QueuesPage() {
  const { can } = useSession();
  const [queues, setQueues] = useState<Queue[] | null>(null);
  const [error, setError] = useState("");
  const load = useCallback(async () => {
    try {
      setQueues((await api<{ queues: Queue[] }>("/api/queues")).queues);
    } catch (err) {
      setError(err instanceof ApiError ? err.problem.message : String(err));
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  async function toggle(queue: Queue) {
    const action = queue.paused ? "resume" : "pause";
    try {
      const { queue: updated } = await api<{ queue: Queue }>(`/api/queues/${encodeURIComponent(queue.name)}/${action}`, {
        method: "POST",
        body: {},
      });
      setQueues((old) => (old ?? []).map((q) => (q.name === updated.name ? updated : q)));
    } catch (err) {
      setError(err instanceof ApiError ? err.problem.message : String(err));
    }
  }

  const manage = can("queues.manage");
  return (
    <>
      <h1>Queues</h1>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {queues === null ? (
        <p aria-busy="true">Loading…</p>
      ) : queues.length === 0 ? (
        <p>No queues yet: a queue appears with its first job.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Queue</th>
              <th scope="col">Status</th>
              <th scope="col">Queued</th>
              <th scope="col">Running</th>
              <th scope="col">Scheduled</th>
              <th scope="col">Waiting</th>
              <th scope="col">Oldest wait</th>
              <th scope="col">Limit</th>
              {manage && <th scope="col">Action</th>}
            </tr>
          </thead>
          <tbody>
            {queues.map((q) => (
              <tr key={q.name} data-queue={q.name}>
                <td>
                  <Link href={`/jobs/?queue=${encodeURIComponent(q.name)}`}>{q.name}</Link>
                </td>
                <td data-testid="queue-status">{q.paused ? "paused" : "active"}</td>
                <td>{q.jobs_by_state.QUEUED ?? 0}</td>
                <td>{q.running}</td>
                <td>{q.jobs_by_state.SCHEDULED ?? 0}</td>
                <td>{q.jobs_by_state.WAITING ?? 0}</td>
                <td>{age(q.oldest_waiting_age)}</td>
                <td>{q.max_concurrency ?? "none"}</td>
                {manage && (
                  <td>
                    <button type="button" className="secondary" onClick={() => void toggle(q)} aria-label={`${q.paused ? "Resume" : "Pause"} queue ${q.name}`}>
                      {q.paused ? "Resume" : "Pause"}
                    </button>
                  </td>
                )}
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
