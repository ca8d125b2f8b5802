"use client";

import Link from "next/link";
import { useEffect, useState } from "react";
import { api, ApiError, type Overview, type Rates } from "@/lib/api";
import { SignOutButton, TenantSwitcher } from "@/lib/session";
import { Sparkline } from "./sparkline";

const ACTIVE = ["WAITING", "SCHEDULED", "QUEUED", "RUNNING"];

function percent(value: number): string {
  return `${(value * 100).toFixed(value > 0 && value < 0.1 ? 1 : 0)}%`;
}

function RateCharts() {
  const [rates, setRates] = useState<Rates | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let live = true;
    async function load() {
      try {
        const answer = await api<Rates>("/api/rates");
        if (live) {
          setRates(answer);
          setError("");
        }
      } catch (err) {
        if (live) setError(err instanceof ApiError ? err.problem.message : String(err));
      }
    }
    void load();
    const timer = setInterval(() => void load(), 30_000);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, []);
  if (error) return <p className="error">{error}</p>;
  if (!rates) return <p aria-busy="true">Loading…</p>;
  const minutes = Math.round(rates.bucket_seconds / 60);
  const sum = (key: "submitted" | "finished" | "failed") => rates.buckets.reduce((n, b) => n + b[key], 0);
  const submitted = sum("submitted");
  const finished = sum("finished");
  const failed = sum("failed");
  const partial = (complete: boolean) => (complete ? "" : " (at least: more jobs than the dashboard reads for a chart)");
  const charts = [
    {
      id: "submitted",
      title: "Submitted",
      total: `${submitted}${partial(rates.submitted_complete)}`,
      values: rates.buckets.map((b) => b.submitted),
      max: undefined,
    },
    {
      id: "finished",
      title: "Finished",
      total: `${finished}${partial(rates.finished_complete)}`,
      values: rates.buckets.map((b) => b.finished),
      max: undefined,
    },
    {
      id: "failure-rate",
      title: "Failure rate (dead of finished)",
      total: finished ? `${percent(failed / finished)} (${failed} dead)` : "—",
      values: rates.buckets.map((b) => b.failure_rate),
      max: 1,
    },
  ];
  return (
    <div className="grid charts">
      {charts.map((c) => (
        <figure key={c.id} className="card chart">
          <figcaption>
            <strong>{c.title}</strong>
            <span data-testid={`${c.id}-total`}>{c.total}</span>
          </figcaption>
          <Sparkline
            values={c.values}
            max={c.max}
            testId={`${c.id}-chart`}
            label={`${c.title} per ${minutes} minutes over the last hour, oldest first: ${c.values
              .map((v) => (v === null ? "none" : c.max === 1 ? percent(v) : String(v)))
              .join(", ")}`}
          />
        </figure>
      ))}
    </div>
  );
}

export default function OverviewPage() {
  const [data, setData] = useState<Overview | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let live = true;
    async function load() {
      try {
        const overview = await api<Overview>("/api/overview");
        if (live) setData(overview);
      } catch (err) {
        if (live) setError(err instanceof ApiError ? err.problem.message : String(err));
      }
    }
    void load();
    const timer = setInterval(() => void load(), 5000);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, []);
  return (
    <>
      <h1>Overview</h1>
      <SignOutButton />
      <TenantSwitcher />
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {!data ? (
        <p aria-busy="true">Loading…</p>
      ) : (
        <>
          <h2>Active jobs</h2>
          <div className="grid">
            {ACTIVE.map((s) => (
              <Link key={s} href={`/jobs/?state=${s}`} className="card stat" data-state={s}>
                <strong>{data.jobs_by_state[s] ?? 0}</strong>
                {s.toLowerCase()}
              </Link>
            ))}
          </div>
          <h2>Last hour</h2>
          <RateCharts />
          <h2>Queues</h2>
          {data.queues.length === 0 ? (
            <p className="muted">No queues yet.</p>
          ) : (
            <ul>
              {data.queues.map((q) => (
                <li key={q.name}>
                  <Link href={`/jobs/?queue=${encodeURIComponent(q.name)}`}>{q.name}</Link>: {q.jobs_by_state.QUEUED ?? 0} queued, {q.running} running
                  {q.paused ? " (paused)" : ""}
                </li>
              ))}
            </ul>
          )}
          <h2>Cluster</h2>
          {data.cluster === null ? (
            <p className="muted">The cluster view needs an admin key.</p>
          ) : (
            <table>
              <thead>
                <tr>
                  <th scope="col">Replica</th>
                  <th scope="col">Role</th>
                  <th scope="col">Executors (running/slots)</th>
                </tr>
              </thead>
              <tbody>
                {data.cluster.replicas.map((r) => (
                  <tr key={r.id}>
                    <td>{r.address || r.id}</td>
                    <td>{r.leader ? "leader" : "follower"}</td>
                    <td>{r.executors.map((e) => `${e.name} (${e.running}/${e.capacity})`).join(", ") || "none"}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </>
  );
}
