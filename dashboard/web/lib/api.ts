// The dashboard's JSON API (dashboard/api.py): same origin, the session cookie, and the CSRF
// token on every mutating call.

export type Violation = { field: string; description: string };
export type Problem = { message: string; reason: string; field_violations?: Violation[] };

export class ApiError extends Error {
  status: number;
  problem: Problem;
  constructor(status: number, problem: Problem) {
    super(problem.message);
    this.status = status;
    this.problem = problem;
  }
}

export type SessionInfo = {
  signed_in: boolean;
  auth_required: boolean;
  tenant: string | null;
  permissions: string[];
  csrf_token: string;
};

export type Progress = { percent: number; step: string; message: string; eta?: string | null };

export type Job = {
  id: string;
  type: string;
  queue: string;
  state: string;
  attempt: number;
  max_attempts: number;
  priority: number;
  labels: Record<string, string>;
  error: string;
  executor: string;
  cancel_requested: boolean;
  depends_on: string[];
  created_at: string | null;
  started_at: string | null;
  finished_at: string | null;
  run_at: string | null;
  progress: Progress | null;
  payload?: unknown;
  result?: unknown;
};

export type JobEvent = {
  sequence: number;
  from: string | null;
  to: string;
  attempt: number;
  executor: string;
  reason: string;
  actor: string;
  time: string | null;
};

export type Attempt = {
  attempt: number;
  executor: string;
  started_at: string | null;
  finished_at: string | null;
  outcome: string | null;
  error: string;
};

export type LogLine = { attempt: number; line: number; text: string };

export type JobDetail = {
  job: Job;
  events: JobEvent[];
  attempts: Attempt[];
  dependencies: { id: string; state: string }[];
  logs: LogLine[];
};

export type Artifact = {
  name: string;
  size_bytes: number;
  sha256: string;
  content_type: string;
  attempt: number;
  created_at: string | null;
};

export function bytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = n / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export type Queue = {
  name: string;
  paused: boolean;
  max_concurrency: number | null;
  jobs_by_state: Record<string, number>;
  running: number;
  oldest_waiting_age: number | null;
  waiting_by_reason: Record<string, number>;
};

export type Cluster = {
  leader_id: string;
  epoch: number;
  replicas: {
    id: string;
    address: string;
    leader: boolean;
    executors: { name: string; capacity: number; running: number; job_types: string[]; queues: string[] }[];
  }[];
};

export type RateBucket = {
  start: string;
  submitted: number;
  finished: number;
  failed: number;
  failure_rate: number | null;
};

export type Rates = {
  since: string;
  until: string;
  bucket_seconds: number;
  buckets: RateBucket[];
  submitted_complete: boolean;
  finished_complete: boolean;
};

export type Overview = {
  jobs_by_state: Record<string, number>;
  queues: Queue[];
  cluster: Cluster | null;
};

let csrf = "";

export function setCsrf(token: string) {
  csrf = token;
}

export async function api<T>(path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const method = init.method ?? "GET";
  const headers: Record<string, string> = { accept: "application/json" };
  if (method !== "GET") headers["x-csrf-token"] = csrf;
  if (init.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  let data: unknown = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const problem = (data as { error?: Problem } | null)?.error ?? {
      message: `HTTP ${response.status}`,
      reason: String(response.status),
    };
    throw new ApiError(response.status, problem);
  }
  return data as T;
}

export const TERMINAL = ["SUCCEEDED", "DEAD", "CANCELLED"];
export const STATES = ["WAITING", "SCHEDULED", "QUEUED", "RUNNING", "SUCCEEDED", "DEAD", "CANCELLED"];

export function when(value: string | null | undefined): string {
  if (!value) return "—";
  return new Date(value).toLocaleString();
}

export type Schedule = {
  id: string;
  name: string;
  cron: string;
  time_zone: string;
  paused: boolean;
  type: string;
  queue: string;
  next_fire_times: string[];
  last_fire_time: string | null;
  last_job_id: string;
};

export function message(err: unknown): string {
  return err instanceof ApiError ? err.problem.message : String(err);
}
