"use client";

import Link from "next/link";
import { useRouter, useSearchParams } from "next/navigation";
import React, { useCallback, useEffect, useState } from "react";
import {
  api,
  ApiError,
  bytes,
  TERMINAL,
  when,
  type Artifact,
  type Job,
  type JobDetail,
  type JobEvent,
  type LogLine,
  type Progress,
} from "@/lib/api";
import { useSession } from "@/lib/session";
import { DependencyGraph } from "./dependency-graph";

export function JobView() {
  const id = useSearchParams().get("id") ?? "";
  const router = useRouter();
  const { can } = useSession();
  const [detail, setDetail] = useState<JobDetail | null>(null);
  const [job, setJob] = useState<Job | null>(null);
  const [progress, setProgress] = useState<Progress | null>(null);
  const [events, setEvents] = useState<JobEvent[]>([]);
  const [logs, setLogs] = useState<LogLine[]>([]);
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");
  const [artifacts, setArtifacts] = useState<Artifact[] | null>(null);
  const [artifactsError, setArtifactsError] = useState("");

  const refresh = useCallback(async () => {
    if (!id) return;
    try {
      const d = await api<JobDetail>(`/api/jobs/${encodeURIComponent(id)}`);
      setDetail(d);
      setJob(d.job);
      setEvents(d.events);
      setLogs(d.logs);
      if (d.job.progress) setProgress(d.job.progress);
      setError("");
    } catch (err) {
      setError(err instanceof ApiError ? err.problem.message : String(err));
      return;
    }
    try {
      const a = await api<{ artifacts: Artifact[] }>(`/api/jobs/${encodeURIComponent(id)}/artifacts`);
      setArtifacts(a.artifacts);
      setArtifactsError("");
    } catch (err) {
      setArtifactsError(err instanceof ApiError ? err.problem.message : String(err));
    }
  }, [id]);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  // Live: the job's WatchJob stream through the dashboard's SSE bridge.
  useEffect(() => {
    if (!id) return;
    const source = new EventSource(`/api/jobs/${encodeURIComponent(id)}/events`);
    source.addEventListener("snapshot", (e) => {
      const snap = JSON.parse((e as MessageEvent).data) as Job;
      setJob((old) => ({ ...(old ?? snap), ...snap, payload: old?.payload, result: old?.result }));
      if (snap.progress) setProgress(snap.progress);
    });
    source.addEventListener("transition", (e) => {
      const ev = JSON.parse((e as MessageEvent).data) as JobEvent;
      setEvents((old) => (old.some((x) => x.sequence === ev.sequence) ? old : old.concat(ev)));
      setJob((old) => (old ? { ...old, state: ev.to, attempt: ev.attempt || old.attempt } : old));
    });
    source.addEventListener("progress", (e) => setProgress(JSON.parse((e as MessageEvent).data) as Progress));
    source.addEventListener("log", (e) => {
      const line = JSON.parse((e as MessageEvent).data) as LogLine;
      setLogs((old) =>
        old.some((x) => x.attempt === line.attempt && x.line === line.line) ? old : old.concat(line).slice(-500),
      );
    });
    source.addEventListener("end", () => {
      source.close();
      void refresh();
    });
    source.addEventListener("problem", () => source.close());
    return () => source.close();
  }, [id, refresh]);

  async function act(action: "cancel" | "retry" | "delete") {
    if (!job) return;
    const question = { cancel: "Cancel", retry: "Retry", delete: "Delete (with its history)" }[action];
    if (!window.confirm(`${question} job ${job.id}?`)) return;
    try {
      if (action === "delete") {
        await api(`/api/jobs/${encodeURIComponent(job.id)}`, { method: "DELETE" });
        router.push("/jobs/");
        return;
      }
      await api(`/api/jobs/${encodeURIComponent(job.id)}/${action}`, { method: "POST", body: {} });
      setNotice(action === "cancel" ? "Cancel requested." : "Retried.");
      await refresh();
    } catch (err) {
      setNotice(err instanceof ApiError ? err.problem.message : String(err));
    }
  }

  async function setPriority(event: React.FormEvent<HTMLFormElement>) {
    event.preventDefault();
    if (!job) return;
    const value = Number(new FormData(event.currentTarget).get("priority"));
    try {
      const answer = await api<{ job: Job; changed: boolean }>(`/api/jobs/${encodeURIComponent(job.id)}/priority`, {
        method: "POST",
        body: { priority: Number.isInteger(value) ? value : String(value) },
      });
      setJob((old) => (old ? { ...old, priority: answer.job.priority } : old));
      setNotice(answer.changed ? `Priority set to ${answer.job.priority}.` : "Priority unchanged.");
    } catch (err) {
      setNotice(err instanceof ApiError ? err.problem.message : String(err));
    }
  }

  if (!id) return <p className="error">No job id in the address.</p>;
  if (error && !job)
    return (
      <p role="alert" className="error">
        {error}
      </p>
    );
  if (!job || !detail) return <p aria-busy="true">Loading…</p>;
  const terminal = TERMINAL.includes(job.state);
  const percent = job.state === "SUCCEEDED" ? 100 : Math.round(progress?.percent ?? 0);
  const operate = can("jobs.operate");
  return (
    <>
      <h1>
        Job <code>{job.id}</code>
      </h1>
      <section className="card" aria-labelledby="status-heading">
        <h2 id="status-heading">
          Status:{" "}
          <span className={`state state-${job.state}`} data-testid="job-state">
            {job.state}
          </span>
          {job.cancel_requested && !terminal && <span className="muted"> (cancel requested)</span>}
        </h2>
        <div className="bar" role="progressbar" aria-label="Progress" aria-valuemin={0} aria-valuemax={100} aria-valuenow={percent}>
          <div style={{ width: `${percent}%` }} />
        </div>
        <p data-testid="progress-text">
          {percent}%{progress?.step ? ` — ${progress.step}` : ""}
          {progress?.message ? `: ${progress.message}` : ""}
          {progress?.eta ? ` (ETA ${when(progress.eta)})` : ""}
        </p>
        {operate && (
          <div role="group" aria-label="Actions">
            {!terminal && (
              <button type="button" className="danger" onClick={() => void act("cancel")}>
                Cancel job
              </button>
            )}
            {(job.state === "DEAD" || job.state === "CANCELLED") && (
              <button type="button" onClick={() => void act("retry")}>
                Retry job
              </button>
            )}
            {job.state !== "RUNNING" && (
              <button type="button" className="secondary" onClick={() => void act("delete")}>
                Delete job
              </button>
            )}
          </div>
        )}
        {operate && ["WAITING", "SCHEDULED", "QUEUED"].includes(job.state) && (
          <form onSubmit={setPriority} className="filters" aria-label="Priority">
            <div>
              <label htmlFor="job-priority">Priority (0–100)</label>
              <input id="job-priority" name="priority" inputMode="numeric" defaultValue={job.priority} key={job.priority} />
            </div>
            <div>
              <button type="submit" className="secondary">
                Set priority
              </button>
            </div>
          </form>
        )}
        {notice && <p role="status">{notice}</p>}
      </section>
      <section className="card" aria-labelledby="facts-heading">
        <h2 id="facts-heading">Details</h2>
        <dl className="facts">
          <dt>Type</dt>
          <dd>{job.type}</dd>
          <dt>Queue</dt>
          <dd>{job.queue}</dd>
          <dt>Priority</dt>
          <dd>{job.priority}</dd>
          <dt>Attempt</dt>
          <dd>
            {job.attempt} of {job.max_attempts}
          </dd>
          <dt>Created</dt>
          <dd>{when(job.created_at)}</dd>
          <dt>Finished</dt>
          <dd>{when(job.finished_at)}</dd>
          <dt>Executor</dt>
          <dd>{job.executor || "—"}</dd>
          {job.error && (
            <>
              <dt>Last error</dt>
              <dd className="error">{job.error}</dd>
            </>
          )}
        </dl>
        {detail.dependencies.length > 0 && (
          <>
            <h2>Depends on</h2>
            <DependencyGraph job={{ id: job.id, state: job.state }} dependencies={detail.dependencies} />
            <ul>
              {detail.dependencies.map((d) => (
                <li key={d.id}>
                  <Link href={`/jobs/detail/?id=${d.id}`}>{d.id}</Link> <span className={`state state-${d.state}`}>{d.state}</span>
                </li>
              ))}
            </ul>
          </>
        )}
        <h2>Payload</h2>
        <pre className="logs">{JSON.stringify(detail.job.payload ?? null, null, 2)}</pre>
        {job.state === "SUCCEEDED" && (
          <>
            <h2>Result</h2>
            <pre className="logs">{JSON.stringify(detail.job.result ?? null, null, 2)}</pre>
          </>
        )}
      </section>
      <section className="card" aria-labelledby="artifacts-heading">
        <h2 id="artifacts-heading">Artifacts</h2>
        {artifactsError ? (
          <p className="error">{artifactsError}</p>
        ) : artifacts === null ? (
          <p aria-busy="true">Loading…</p>
        ) : artifacts.length === 0 ? (
          <p className="muted">None stored.</p>
        ) : (
          <table data-testid="artifacts">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Size</th>
                <th scope="col">Type</th>
                <th scope="col">Attempt</th>
                <th scope="col">Stored</th>
              </tr>
            </thead>
            <tbody>
              {artifacts.map((a) => (
                <tr key={a.name}>
                  <td>
                    <a
                      href={`/api/jobs/${encodeURIComponent(job.id)}/artifacts/${encodeURIComponent(a.name)}`}
                      download={a.name.split("/").pop()}
                      title={`SHA-256 ${a.sha256}`}
                    >
                      {a.name}
                    </a>
                  </td>
                  <td>{bytes(a.size_bytes)}</td>
                  <td>{a.content_type}</td>
                  <td>{a.attempt}</td>
                  <td>{when(a.created_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section className="card" aria-labelledby="attempts-heading">
        <h2 id="attempts-heading">Attempts</h2>
        {detail.attempts.length === 0 ? (
          <p className="muted">Not run yet.</p>
        ) : (
          <table>
            <thead>
              <tr>
                <th scope="col">Attempt</th>
                <th scope="col">Executor</th>
                <th scope="col">Started</th>
                <th scope="col">Outcome</th>
                <th scope="col">Error</th>
              </tr>
            </thead>
            <tbody>
              {detail.attempts.map((a) => (
                <tr key={a.attempt}>
                  <td>{a.attempt}</td>
                  <td>{a.executor}</td>
                  <td>{when(a.started_at)}</td>
                  <td>{a.outcome ?? "running"}</td>
                  <td className="error">{a.error}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </section>
      <section className="card" aria-labelledby="timeline-heading">
        <h2 id="timeline-heading">Events</h2>
        <ol className="timeline" data-testid="timeline">
          {events.map((e) => (
            <li key={e.sequence}>
              <span className="muted">{when(e.time)}</span> {e.from ?? "—"} → <strong>{e.to}</strong>
              {e.reason ? `: ${e.reason}` : ""}
              {e.actor ? <span className="muted"> by {e.actor}</span> : null}
            </li>
          ))}
        </ol>
      </section>
      <section className="card" aria-labelledby="logs-heading">
        <h2 id="logs-heading">Log</h2>
        <pre className="logs" tabIndex={0} aria-label="Log lines" data-testid="logs">
          {logs.length ? logs.map((l) => l.text).join("\n") : "(no lines)"}
        </pre>
      </section>
    </>
  );
}
