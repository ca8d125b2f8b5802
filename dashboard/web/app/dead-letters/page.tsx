"use client";

import Link from "next/link";
import { useCallback, useEffect, useState, type FormEvent } from "react";
import { api, message, when, type Job } from "@/lib/api";
import { useSession } from "@/lib/session";

type Page = { jobs: Job[]; next_cursor: string };

// The dead-letter queue: DEAD jobs, newest first, one page at a time, and bulk retry by queue
// and type (one RetryJobs call each click).
export default function DeadLettersPage() {
  const { can } = useSession();
  const [queue, setQueue] = useState("");
  const [type, setType] = useState("");
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [cursor, setCursor] = useState("");
  const [error, setError] = useState("");
  const [notice, setNotice] = useState("");

  const load = useCallback(
    async (from: string) => {
      try {
        const query = new URLSearchParams({ state: "DEAD", page_size: "50" });
        if (queue) query.set("queue", queue);
        if (type) query.set("type", type);
        if (from) query.set("cursor", from);
        const page = await api<Page>(`/api/jobs?${query}`);
        setJobs((old) => (from ? (old ?? []).concat(page.jobs) : page.jobs));
        setCursor(page.next_cursor);
        setError("");
      } catch (err) {
        setError(message(err));
      }
    },
    [queue, type],
  );
  useEffect(() => {
    void load("");
  }, [load]);

  function filter(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setQueue(String(form.get("queue") ?? "").trim());
    setType(String(form.get("type") ?? "").trim());
  }

  async function retryAll() {
    const scope = [queue && `queue ${queue}`, type && `type ${type}`].filter(Boolean).join(", ") || "every queue and type";
    if (!window.confirm(`Retry the dead jobs of ${scope}?`)) return;
    try {
      const answer = await api<{ retried: number; more: boolean }>("/api/dead-letters/retry", {
        method: "POST",
        body: { queue, type },
      });
      setNotice(`Retried ${answer.retried} jobs${answer.more ? "; more are left, retry again" : ""}.`);
      await load("");
    } catch (err) {
      setError(message(err));
    }
  }

  return (
    <>
      <h1>Dead letters</h1>
      <form className="filters" onSubmit={filter} aria-label="Filters">
        <div>
          <label htmlFor="dl-queue">Queue</label>
          <input id="dl-queue" name="queue" defaultValue={queue} />
        </div>
        <div>
          <label htmlFor="dl-type">Type</label>
          <input id="dl-type" name="type" defaultValue={type} />
        </div>
        <div>
          <button type="submit">Apply</button>
          {can("jobs.operate") && jobs !== null && jobs.length > 0 && (
            <button type="button" className="danger" onClick={() => void retryAll()}>
              Retry all shown
            </button>
          )}
        </div>
      </form>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {notice && <p role="status">{notice}</p>}
      {jobs === null ? (
        <p aria-busy="true">Loading…</p>
      ) : jobs.length === 0 ? (
        <p data-testid="dead-count">No dead jobs.</p>
      ) : (
        <>
          <p className="muted" data-testid="dead-count">
            {jobs.length} dead jobs{cursor ? " (more below)" : ""}
          </p>
          <table>
            <thead>
              <tr>
                <th scope="col">Job</th>
                <th scope="col">Type</th>
                <th scope="col">Queue</th>
                <th scope="col">Attempts</th>
                <th scope="col">Finished</th>
                <th scope="col">Last error</th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((j) => (
                <tr key={j.id} data-job-id={j.id}>
                  <td>
                    <Link href={`/jobs/detail/?id=${j.id}`}>{j.id.slice(0, 8)}</Link>
                  </td>
                  <td>{j.type}</td>
                  <td>{j.queue}</td>
                  <td>{j.attempt}</td>
                  <td>{when(j.finished_at)}</td>
                  <td className="error">{j.error.split("\n")[0]}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {cursor && (
            <button type="button" className="secondary" onClick={() => void load(cursor)}>
              Load more
            </button>
          )}
        </>
      )}
    </>
  );
}
