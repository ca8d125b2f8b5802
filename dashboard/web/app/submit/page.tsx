"use client";

import { useRouter } from "next/navigation";
import { useState, type FormEvent } from "react";
import { api, ApiError, type Job } from "@/lib/api";
import { useSession } from "@/lib/session";

const FIELDS = ["type", "queue", "priority", "payload"] as const;
type Field = (typeof FIELDS)[number];

// "job.type", "jobs[0].payload" -> "type", "payload"
function fieldOf(path: string): Field | null {
  const last = path.split(".").pop() ?? path;
  return (FIELDS as readonly string[]).includes(last) ? (last as Field) : null;
}

export default function SubmitPage() {
  const router = useRouter();
  const { can } = useSession();
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [general, setGeneral] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent<HTMLFormElement>) {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setErrors({});
    setGeneral("");
    setBusy(true);
    try {
      const { job } = await api<{ job: Job }>("/api/jobs", {
        method: "POST",
        body: {
          type: form.get("type"),
          queue: form.get("queue"),
          priority: form.get("priority"),
          payload: form.get("payload"),
        },
      });
      router.push(`/jobs/detail/?id=${job.id}`);
    } catch (err) {
      if (err instanceof ApiError) {
        const found: Partial<Record<Field, string>> = {};
        const rest: string[] = [];
        for (const v of err.problem.field_violations ?? []) {
          const field = fieldOf(v.field);
          if (field) found[field] = found[field] ? `${found[field]}; ${v.description}` : v.description;
          else rest.push(`${v.field}: ${v.description}`);
        }
        setErrors(found);
        setGeneral(rest.length ? rest.join("; ") : Object.keys(found).length ? "" : err.problem.message);
      } else setGeneral(String(err));
    } finally {
      setBusy(false);
    }
  }

  if (!can("jobs.submit")) return <p>This key may not submit jobs.</p>;
  const described = (f: Field) => (errors[f] ? `${f}-error` : undefined);
  return (
    <section className="card narrow" style={{ maxWidth: 640 }}>
      <h1>Submit a job</h1>
      <form onSubmit={submit} noValidate>
        <label htmlFor="type">Type</label>
        <input id="type" name="type" aria-invalid={!!errors.type} aria-describedby={described("type")} />
        {errors.type && (
          <p id="type-error" className="field-error">
            {errors.type}
          </p>
        )}
        <label htmlFor="queue">Queue</label>
        <input id="queue" name="queue" placeholder="default" aria-invalid={!!errors.queue} aria-describedby={described("queue")} />
        {errors.queue && (
          <p id="queue-error" className="field-error">
            {errors.queue}
          </p>
        )}
        <label htmlFor="priority">Priority</label>
        <input id="priority" name="priority" inputMode="numeric" placeholder="50" aria-invalid={!!errors.priority} aria-describedby={described("priority")} />
        {errors.priority && (
          <p id="priority-error" className="field-error">
            {errors.priority}
          </p>
        )}
        <label htmlFor="payload">Payload (JSON)</label>
        <textarea id="payload" name="payload" spellCheck={false} defaultValue="{}" aria-invalid={!!errors.payload} aria-describedby={described("payload")} />
        {errors.payload && (
          <p id="payload-error" className="field-error">
            {errors.payload}
          </p>
        )}
        {general && (
          <p role="alert" className="error">
            {general}
          </p>
        )}
        <button type="submit" disabled={busy}>
          Submit
        </button>
      </form>
    </section>
  );
}
