"use client";

import { useVirtualizer } from "@tanstack/react-virtual";
import Link from "next/link";
import { useRouter, useSearchParams } from "next/navigation";
import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { api, ApiError, STATES, when, type Job } from "@/lib/api";

const ROW = 36;
const PAGE = 100;

type Page = { jobs: Job[]; next_cursor: string };

export function JobsList() {
  const params = useSearchParams();
  const router = useRouter();
  const state = params.get("state") ?? "";
  const queue = params.get("queue") ?? "";
  const type = params.get("type") ?? "";
  const label = params.get("label") ?? "";
  const [jobs, setJobs] = useState<Job[]>([]);
  const [cursor, setCursor] = useState<string | null>("");
  const [loading, setLoading] = useState(false);
  const [error, setError] = useState("");
  const generation = useRef(0);
  const scroller = useRef<HTMLDivElement>(null);

  const load = useCallback(
    async (from: string, gen: number) => {
      setLoading(true);
      try {
        const query = new URLSearchParams({ page_size: String(PAGE) });
        if (state) query.set("state", state);
        if (queue) query.set("queue", queue);
        if (type) query.set("type", type);
        if (label) query.set("label", label);
        if (from) query.set("cursor", from);
        const page = await api<Page>(`/api/jobs?${query}`);
        if (gen !== generation.current) return; // the filters changed meanwhile
        setJobs((old) => (from ? old.concat(page.jobs) : page.jobs));
        setCursor(page.next_cursor || null);
        setError("");
      } catch (err) {
        if (gen === generation.current) setError(err instanceof ApiError ? err.problem.message : String(err));
      } finally {
        if (gen === generation.current) setLoading(false);
      }
    },
    [state, queue, type, label],
  );

  useEffect(() => {
    generation.current += 1;
    setJobs([]);
    setCursor("");
    scroller.current?.scrollTo({ top: 0 });
    void load("", generation.current);
  }, [load]);

  // Live: WatchJobs through the SSE bridge updates the loaded rows in place (new jobs are not
  // inserted: the pages' keyset order stays the one that was read).
  const [stale, setStale] = useState(false);
  const [live, setLive] = useState(false);
  useEffect(() => {
    setLive(false);
    const query = new URLSearchParams();
    if (state) query.set("state", state);
    if (queue) query.set("queue", queue);
    if (type) query.set("type", type);
    const source = new EventSource(`/api/events/jobs?${query}`);
    source.addEventListener("job", (e) => {
      const changed = JSON.parse((e as MessageEvent).data) as Job;
      setJobs((old) => {
        const at = old.findIndex((j) => j.id === changed.id);
        if (at < 0) return old;
        const next = old.slice();
        next[at] = changed;
        return next;
      });
    });
    source.addEventListener("subscribed", () => setLive(true));
    source.addEventListener("changes_dropped", () => setStale(true));
    return () => source.close();
  }, [state, queue, type]);

  const virtualizer = useVirtualizer({
    count: jobs.length,
    getScrollElement: () => scroller.current,
    estimateSize: () => ROW,
    overscan: 10,
    getItemKey: (index) => jobs[index].id,
  });
  const items = virtualizer.getVirtualItems();
  const last = items.length ? items[items.length - 1].index : -1;

  useEffect(() => {
    if (cursor && !loading && last >= jobs.length - 20) void load(cursor, generation.current);
  }, [cursor, loading, last, jobs.length, load]);

  function applyFilters(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const query = new URLSearchParams();
    for (const name of ["state", "queue", "type", "label"]) {
      const value = String(form.get(name) ?? "").trim();
      if (value) query.set(name, value);
    }
    const text = query.toString();
    router.replace(text ? `/jobs/?${text}` : "/jobs/");
  }

  return (
    <>
      <h1>Jobs</h1>
      <form className="filters" onSubmit={applyFilters} aria-label="Filters" key={`${state}|${queue}|${type}|${label}`}>
        <div>
          <label htmlFor="filter-state">State</label>
          <select id="filter-state" name="state" defaultValue={state}>
            <option value="">any</option>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </div>
        <div>
          <label htmlFor="filter-queue">Queue</label>
          <input id="filter-queue" name="queue" defaultValue={queue} />
        </div>
        <div>
          <label htmlFor="filter-type">Type</label>
          <input id="filter-type" name="type" defaultValue={type} />
        </div>
        <div>
          <label htmlFor="filter-label">Label</label>
          <input
            id="filter-label"
            name="label"
            defaultValue={label}
            placeholder="key=value"
            aria-describedby="filter-label-hint"
          />
          <span id="filter-label-hint" className="visually-hidden">
            key=value, or a key alone for any value
          </span>
        </div>
        <div>
          <button type="submit">Apply</button>
        </div>
      </form>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {stale && (
        <p role="status">
          Some live changes were missed: <a href={typeof window === "undefined" ? "/jobs/" : window.location.href}>reload</a> to see every job as it is now.
        </p>
      )}
      <p className="muted" aria-live="polite" data-testid="loaded" data-live={live ? "yes" : "no"}>
        {jobs.length} jobs loaded{cursor === null ? " (all)" : loading ? ", loading more…" : ""}
      </p>
      <div className="row head" style={{ position: "relative" }} aria-hidden="true">
        <span>#</span>
        <span>ID</span>
        <span>Type</span>
        <span className="wide">Queue</span>
        <span>State</span>
        <span className="wide">Attempt</span>
        <span className="wide">Created</span>
      </div>
      <div ref={scroller} className="rows" tabIndex={0} aria-label="Job list, scroll to load more" role="region">
        <ul style={{ height: virtualizer.getTotalSize(), margin: 0, padding: 0, listStyle: "none" }}>
          {items.map((item) => {
            const job = jobs[item.index];
            return (
              <li
                key={item.key}
                className="row"
                data-index={item.index}
                data-job-id={job.id}
                style={{ transform: `translateY(${item.start}px)` }}
              >
                <span className="muted">{item.index + 1}</span>
                <span>
                  <Link href={`/jobs/detail/?id=${job.id}`}>{job.id}</Link>
                </span>
                <span>{job.type}</span>
                <span className="wide">{job.queue}</span>
                <span className={`state state-${job.state}`}>{job.state}</span>
                <span className="wide">
                  {job.attempt}/{job.max_attempts}
                </span>
                <span className="wide">{when(job.created_at)}</span>
              </li>
            );
          })}
        </ul>
      </div>
    </>
  );
}
