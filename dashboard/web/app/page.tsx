"use client";

import Link from "next/link";
import { useEffect, useState } from "react";
import { api, ApiError, type Overview } from "@/lib/api";
import { SignOutButton, TenantSwitcher } from "@/lib/session";

const ACTIVE = ["WAITING", "SCHEDULED", "QUEUED", "RUNNING"];

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
