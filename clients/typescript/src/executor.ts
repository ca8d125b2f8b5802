// An executor for jobsched in TypeScript: the protocol of protos/jobsched/v1/executor_service.proto
// (register, heartbeat, ack, progress, logs, result, cancel, reconnect with in_flight) around
// handlers that are plain async functions of a JobContext returning a JSON-able result.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { durationMs, timestampNow } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import { AsyncQueue } from "./async_queue.js";
import { Connection, type ConnectionOptions } from "./connection.js";
import {
  ConnectRequestSchema,
  ExecutorService,
  type Assignment,
  type ConnectRequest,
  type ConnectResponse,
  type JobResult,
  JobResultSchema,
} from "./gen/jobsched/v1/executor_service_pb.js";
import { fromJsonBytes, toJsonBytes } from "./payloads.js";

/** Thrown by a handler when retrying cannot help: the job goes DEAD at once. Any other error
 * fails the attempt as retryable (JobFailure.retryable true): the retry policy decides. */
export class NonRetryableError extends Error {
  override name = "NonRetryableError";
}

export interface JobContext {
  jobId: string;
  attempt: number;
  type: string;
  queue: string;
  tenant: string;
  labels: Record<string, string>;
  /** The payload decoded as JSON (undefined when empty). */
  payload: unknown;
  /** The payload's bytes as submitted. */
  rawPayload: Uint8Array;
  /** Aborted when the job is cancelled, times out, or the executor stops. */
  signal: AbortSignal;
  /** Report progress (percent 0..100; the scheduler clamps it). */
  progress(percent: number, step?: string, message?: string): void;
  /** Log lines (numbered per attempt from 1 by the executor). */
  log(...lines: string[]): void;
}

/** A handler returns the job's result (encoded as JSON; undefined means an empty result). */
export type Handler = (job: JobContext) => Promise<unknown> | unknown;

export interface ExecutorOptions extends ConnectionOptions {
  /** Unique among live executors; for example `${hostname}:${pid}`. */
  name: string;
  handlers: Record<string, Handler>;
  /** Jobs run at once (1..10000); 4 when unset. */
  capacity?: number;
  /** Queues to take work from; all when empty. */
  queues?: string[];
  labels?: Record<string, string>;
  /** The longest wait between reconnects, in ms (the first is 100 ms, doubling). */
  maxReconnectDelayMs?: number;
  /** Told of what happens (registered, disconnected, ...), for logs and tests. */
  onEvent?: (event: ExecutorEvent) => void;
}

export type ExecutorEvent =
  // `reattached`: the attempts this Register listed in in_flight (those the scheduler does not
  // re-attach come back as CancelAssignment)
  | { kind: "registered"; sessionId: string; reattached: number }
  | { kind: "disconnected"; error: string }
  | { kind: "finished"; jobId: string; attempt: number; outcome: string }
  | { kind: "result-acked"; jobId: string; attempt: number; accepted: boolean; reason: string };

interface Run {
  jobId: string;
  attempt: number;
  controller: AbortController;
  why?: "cancelled" | "timeout" | "released";
  timeoutMs?: number;
}

interface Pending {
  result: JobResult;
  sentAt: number;
}

const key = (jobId: string, attempt: number) => `${jobId}#${attempt}`;

export class Executor {
  readonly connection: Connection;
  private readonly options: ExecutorOptions;
  private readonly runs = new Map<string, Run>();
  private readonly pending = new Map<string, Pending>(); // results not yet acknowledged
  private outbox: AsyncQueue<ConnectRequest> | null = null;
  private sessionToken = "";
  private heartbeatMs = 3000;
  private stopping = false;
  private stopped: Promise<void> | null = null;
  private session: AbortController | null = null;

  constructor(options: ExecutorOptions) {
    const capacity = options.capacity ?? 4;
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 10_000) {
      throw new RangeError("capacity: must be a whole number in [1, 10000]");
    }
    if (Object.keys(options.handlers).length === 0) {
      throw new RangeError("handlers: at least one job type");
    }
    this.options = { ...options, capacity };
    this.connection = new Connection(options);
  }

  /** Runs until stop(): connects, and reconnects with backoff whenever the stream breaks. */
  run(): Promise<void> {
    this.stopped ??= this.loop();
    return this.stopped;
  }

  /** Stops taking work, waits up to `graceMs` for running handlers, releases the rest (the
   * scheduler requeues them without burning an attempt), then ends the stream. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.stopping) return this.stopped ?? undefined;
    this.stopping = true;
    this.heartbeat(true);
    const deadline = Date.now() + graceMs;
    while (this.runs.size > 0 && Date.now() < deadline) await sleep(20);
    for (const run of this.runs.values()) {
      run.why = "released";
      run.controller.abort(new Error("the executor is stopping"));
    }
    const ackDeadline = Date.now() + 5_000;
    while ((this.runs.size > 0 || this.pending.size > 0) && Date.now() < ackDeadline) await sleep(20);
    this.outbox?.close();
    this.session?.abort();
    await this.stopped;
  }

  /** Drops the current stream as a broken link would: the loop reconnects with the session
   * token and re-attaches the running attempts (Register.in_flight). */
  dropConnection(): void {
    this.session?.abort(new Error("connection dropped"));
  }

  private async loop(): Promise<void> {
    const client = this.connection.client(ExecutorService);
    let delay = 100;
    while (!this.stopping) {
      const outbox = new AsyncQueue<ConnectRequest>();
      const session = new AbortController();
      this.session = session;
      let timer: NodeJS.Timeout | undefined;
      const inFlight = [...new Set([...this.runs.keys(), ...this.pending.keys()])].map((k) => {
        const [jobId, attempt] = k.split("#");
        return { jobId, attempt: Number(attempt) };
      });
      outbox.push(
        create(ConnectRequestSchema, {
          message: {
            case: "register",
            value: {
              name: this.options.name,
              capacity: this.options.capacity,
              jobTypes: Object.keys(this.options.handlers),
              queues: this.options.queues ?? [],
              labels: this.options.labels ?? {},
              inFlight,
              acceptsBatches: true,
              sessionToken: this.sessionToken,
            },
          },
        }),
      );
      try {
        for await (const message of client.connect(outbox, { signal: session.signal })) {
          if (message.message.case === "registered") {
            const registered = message.message.value;
            this.sessionToken = registered.sessionToken;
            if (registered.heartbeatInterval) this.heartbeatMs = durationMs(registered.heartbeatInterval);
            this.outbox = outbox;
            delay = 100;
            timer = setInterval(() => this.tick(), this.heartbeatMs);
            this.heartbeat(this.stopping);
            for (const p of this.pending.values()) this.sendResult(p);
            this.options.onEvent?.({
              kind: "registered",
              sessionId: registered.sessionId,
              reattached: inFlight.length,
            });
          } else {
            this.handle(message);
          }
        }
        if (!this.stopping) throw new Error("the scheduler ended the stream");
      } catch (error) {
        if (this.stopping) break;
        this.options.onEvent?.({ kind: "disconnected", error: ConnectError.from(error).message });
      } finally {
        clearInterval(timer);
        if (this.outbox === outbox) this.outbox = null;
        outbox.close();
      }
      if (this.stopping) break;
      await sleep(delay);
      delay = Math.min(delay * 2, this.options.maxReconnectDelayMs ?? 5_000);
    }
  }

  private handle(message: ConnectResponse): void {
    const m = message.message;
    switch (m.case) {
      case "assignment":
        this.start(m.value);
        break;
      case "assignments":
        for (const a of m.value.assignments) this.start(a);
        break;
      case "cancel": {
        const attempt = m.value.attempt;
        if (!attempt) break;
        const run = this.runs.get(key(attempt.jobId, attempt.attempt));
        if (run) {
          run.why = "cancelled";
          run.controller.abort(new Error(`cancelled: ${m.value.reason}`));
        }
        break;
      }
      case "resultAck":
        this.acked(m.value.attempt?.jobId ?? "", m.value.attempt?.attempt ?? 0, m.value.accepted, m.value.reason);
        break;
      case "resultAcks":
        for (const a of m.value.acks) this.acked(a.attempt?.jobId ?? "", a.attempt?.attempt ?? 0, a.accepted, a.reason);
        break;
      default:
        break; // ping, and message kinds of a newer scheduler
    }
  }

  private acked(jobId: string, attempt: number, accepted: boolean, reason: string): void {
    this.pending.delete(key(jobId, attempt));
    this.options.onEvent?.({ kind: "result-acked", jobId, attempt, accepted, reason });
  }

  private send(request: MessageInitShape<typeof ConnectRequestSchema>["message"]): void {
    this.outbox?.push(create(ConnectRequestSchema, { message: request }));
  }

  private heartbeat(draining: boolean): void {
    const running = [...this.runs.values(), ...[...this.pending.values()].map((p) => p.result.attempt!)]
      .map((r) => ({ jobId: r.jobId, attempt: r.attempt }));
    this.send({ case: "heartbeat", value: { sendTime: timestampNow(), running, draining } });
  }

  private tick(): void {
    this.heartbeat(this.stopping);
    const now = Date.now();
    for (const p of this.pending.values()) {
      if (now - p.sentAt >= this.heartbeatMs) this.sendResult(p); // unanswered: send it again
    }
  }

  private sendResult(p: Pending): void {
    p.sentAt = Date.now();
    this.send({ case: "result", value: p.result });
  }

  private start(assignment: Assignment): void {
    const attempt = assignment.attempt;
    if (!attempt) return;
    const k = key(attempt.jobId, attempt.attempt);
    if (this.runs.has(k)) return;
    // Acknowledge first: an ack later than Registered.ack_timeout reverts the assignment.
    this.send({ case: "ack", value: { attempt } });
    const run: Run = { jobId: attempt.jobId, attempt: attempt.attempt, controller: new AbortController() };
    this.runs.set(k, run);
    void this.execute(assignment, run).then((result) => {
      this.runs.delete(k);
      const p: Pending = { result, sentAt: 0 };
      this.pending.set(k, p);
      this.sendResult(p);
      this.options.onEvent?.({
        kind: "finished",
        jobId: run.jobId,
        attempt: run.attempt,
        outcome: result.outcome.case ?? "",
      });
    });
  }

  private async execute(assignment: Assignment, run: Run): Promise<JobResult> {
    const attempt = assignment.attempt!;
    const handler = this.options.handlers[assignment.type];
    const fail = (message: string, retryable: boolean) =>
      create(JobResultSchema, { attempt, outcome: { case: "failure", value: { message, retryable } } });
    if (!handler) return fail(`no handler for job type ${assignment.type}`, false);
    let timer: NodeJS.Timeout | undefined;
    if (assignment.timeout) {
      run.timeoutMs = durationMs(assignment.timeout);
      timer = setTimeout(() => {
        run.why = "timeout";
        run.controller.abort(new Error(`timed out after ${run.timeoutMs! / 1000}s`));
      }, run.timeoutMs);
    }
    let nextLine = 1;
    const aborted = new Promise<never>((_, reject) => {
      run.controller.signal.addEventListener("abort", () => reject(run.controller.signal.reason), { once: true });
    });
    aborted.catch(() => undefined);
    try {
      let payload: unknown;
      try {
        payload = fromJsonBytes(assignment.payload);
      } catch (error) {
        return fail(`the payload is not JSON: ${(error as Error).message}`, false);
      }
      const context: JobContext = {
        jobId: attempt.jobId,
        attempt: attempt.attempt,
        type: assignment.type,
        queue: assignment.queue,
        tenant: assignment.tenant,
        labels: { ...assignment.labels },
        payload,
        rawPayload: assignment.payload,
        signal: run.controller.signal,
        progress: (percent, step = "", message = "") => {
          if (run.controller.signal.aborted) return;
          this.send({ case: "progress", value: { attempt, progress: { percent, step, message } } });
        },
        log: (...lines) => {
          if (lines.length === 0 || run.controller.signal.aborted) return;
          this.send({ case: "log", value: { attempt, lines, firstLineNumber: nextLine } });
          nextLine += lines.length;
        },
      };
      const value = await Promise.race([Promise.resolve().then(() => handler(context)), aborted]);
      return create(JobResultSchema, {
        attempt,
        outcome: { case: "result", value: value === undefined ? new Uint8Array() : toJsonBytes(value) },
      });
    } catch (error) {
      if (run.why === "cancelled") return create(JobResultSchema, { attempt, outcome: { case: "cancelled", value: true } });
      if (run.why === "released") return create(JobResultSchema, { attempt, outcome: { case: "released", value: true } });
      if (run.why === "timeout") return fail(`timed out after ${run.timeoutMs! / 1000}s`, true);
      const message = error instanceof Error ? error.message : String(error);
      return fail(message || "the handler failed", !(error instanceof NonRetryableError));
    } finally {
      clearTimeout(timer);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
