"use client";

import { useEffect, useState } from "react";
import { api, message, when, type Cluster } from "@/lib/api";

type Replica = Cluster["replicas"][number] & { started_at?: string | null; last_seen?: string | null };

export default function ExecutorsPage() {
  const [cluster, setCluster] = useState<Cluster | null>(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let live = true;
    async function load() {
      try {
        const c = await api<Cluster>("/api/cluster");
        if (live) setCluster(c);
      } catch (err) {
        if (live) setError(message(err));
      }
    }
    void load();
    const timer = setInterval(() => void load(), 5000);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, []);
  if (error)
    return (
      <>
        <h1>Executors</h1>
        <p role="alert" className="error">
          {error}
        </p>
      </>
    );
  if (!cluster) return <p aria-busy="true">Loading…</p>;
  const executors = cluster.replicas.flatMap((r) => r.executors.map((e) => ({ ...e, replica: r.address || r.id })));
  return (
    <>
      <h1>Executors</h1>
      <h2>Scheduler replicas</h2>
      <table>
        <thead>
          <tr>
            <th scope="col">Replica</th>
            <th scope="col">Role</th>
            <th scope="col">Last seen</th>
          </tr>
        </thead>
        <tbody>
          {(cluster.replicas as Replica[]).map((r) => (
            <tr key={r.id}>
              <td>{r.address || r.id}</td>
              <td>{r.leader ? `leader (epoch ${cluster.epoch})` : "follower"}</td>
              <td>{when(r.last_seen)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Connected executors</h2>
      {executors.length === 0 ? (
        <p>No executor is connected.</p>
      ) : (
        <table>
          <thead>
            <tr>
              <th scope="col">Executor</th>
              <th scope="col">Replica</th>
              <th scope="col">Slots used</th>
              <th scope="col">Job types</th>
              <th scope="col">Queues</th>
            </tr>
          </thead>
          <tbody>
            {executors.map((e) => (
              <tr key={`${e.replica}/${e.name}`} data-executor={e.name}>
                <td>{e.name}</td>
                <td>{e.replica}</td>
                <td>
                  {e.running} / {e.capacity}
                </td>
                <td>{e.job_types.join(", ") || "all"}</td>
                <td>{e.queues.join(", ") || "all"}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}
