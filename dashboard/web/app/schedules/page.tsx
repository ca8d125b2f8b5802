"use client";

import Link from "next/link";
import { useCallback, useEffect, useState } from "react";
import { api, message, when, type Job, type Schedule } from "@/lib/api";
import { useSession } from "@/lib/session";

export default function SchedulesPage() {
  const { can } = useSession();
  const [schedules, setSchedules] = useState<Schedule[] | null>(null);
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");
  const load = useCallback(async () => {
    try {
      setSchedules((await api<{ schedules: Schedule[] }>("/api/schedules")).schedules);
    } catch (err) {
      setError(message(err));
    }
  }, []);
  useEffect(() => {
    void load();
  }, [load]);

  async function act(schedule: Schedule, action: "pause" | "resume" | "trigger") {
    try {
      const path = `/api/schedules/${encodeURIComponent(schedule.id)}/${action}`;
      if (action === "trigger") {
        const answer = await api<{ job: Job | null; skipped: boolean }>(path, { method: "POST", body: {} });
        setNotice(answer.job ? `Submitted job ${answer.job.id}.` : "Skipped: the previous run is still going.");
        await load();
        return;
      }
      const { schedule: updated } = await api<{ schedule: Schedule }>(path, { method: "POST", body: {} });
      setSchedules((old) => (old ?? []).map((s) => (s.id === updated.id ? updated : s)));
    } catch (err) {
      setError(message(err));
    }
  }

  const manage = can("schedules.manage");
  return (
    <>
      <h1>Schedules</h1>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {notice && <p role="status">{notice}</p>}
      {schedules === null ? (
        <p aria-busy="true">Loading…</p>
      ) : schedules.length === 0 ? (
        <p>
          No schedules. Create one with <code>jobsched schedules create NAME --cron EXPR --type T</code>.
        </p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Schedule</th>
              <th scope="col">Cron</th>
              <th scope="col">Job</th>
              <th scope="col">Status</th>
              <th scope="col">Next fire times</th>
              <th scope="col">Last job</th>
              {manage && <th scope="col">Actions</th>}
            </tr>
          </thead>
          <tbody>
            {schedules.map((s) => (
              <tr key={s.id} data-schedule={s.name}>
                <td>{s.name}</td>
                <td>
                  <code>{s.cron}</code> {s.time_zone || "UTC"}
                </td>
                <td>
                  {s.type} on {s.queue || "default"}
                </td>
                <td data-testid="schedule-status">{s.paused ? "paused" : "active"}</td>
                <td>{s.paused ? "—" : s.next_fire_times.slice(0, 3).map(when).join(", ")}</td>
                <td>{s.last_job_id ? <Link href={`/jobs/detail/?id=${s.last_job_id}`}>{s.last_job_id.slice(0, 8)}</Link> : "—"}</td>
                {manage && (
                  <td>
                    <button type="button" className="secondary" onClick={() => void act(s, s.paused ? "resume" : "pause")} aria-label={`${s.paused ? "Resume" : "Pause"} schedule ${s.name}`}>
                      {s.paused ? "Resume" : "Pause"}
                    </button>
                    <button type="button" className="secondary" onClick={() => void act(s, "trigger")} aria-label={`Trigger schedule ${s.name} now`}>
                      Trigger
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
