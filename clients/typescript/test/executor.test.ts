// The Executor loop against a real scheduler: register, ack, progress, logs, result; failures
// retryable or not; reconnect with in_flight; and the stream refusing unnumbered log lines.
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  Code,
  Connection,
  ConnectRequestSchema,
  Executor,
  ExecutorService,
  JobService,
  JobState,
  NonRetryableError,
  errorDetails,
  fromJsonBytes,
  toJsonBytes,
  type ExecutorEvent,
  type Handler,
} from "../src/index.js";
import { AsyncQueue } from "../src/async_queue.js";
import { ADDRESS, EXECUTOR_TOKEN, OPERATOR_TOKEN, TENANT, eventually } from "./env.js";

const jobs = () => new Connection({ address: ADDRESS(), token: OPERATOR_TOKEN(), tenant: TENANT() }).client(JobService);

function executor(handlers: Record<string, Handler>, events: ExecutorEvent[] = []) {
  return new Executor({
    address: ADDRESS(),
    token: EXECUTOR_TOKEN(),
    name: `ts-test-${randomUUID()}`,
    capacity: 2,
    handlers,
    onEvent: (e) => events.push(e),
  });
}

async function finished(id: string) {
  return eventually(async () => {
    const { job } = await jobs().getJobStatus({ id });
    return [JobState.SUCCEEDED, JobState.DEAD, JobState.CANCELLED].includes(job!.state) ? job : undefined;
  });
}

test("a job runs to SUCCEEDED with its progress, logs and JSON result", async () => {
  const type = `ts.echo.${randomUUID().slice(0, 8)}`;
  const worker = executor({
    [type]: async (job) => {
      job.progress(50, "half", "halfway");
      job.log("first line", "second line");
      job.log("third line");
      job.progress(100, "done");
      return { echoed: job.payload, attempt: job.attempt, tenant: job.tenant };
    },
  });
  const running = worker.run();
  try {
    const { job } = await jobs().submitJob({ job: { type, payload: toJsonBytes({ hello: "node" }) } });
    const done = await finished(job!.id);
    assert.equal(done.state, JobState.SUCCEEDED, done.lastError);
    assert.deepEqual(fromJsonBytes(done.result), { echoed: { hello: "node" }, attempt: 1, tenant: TENANT() });
    assert.equal(done.progress?.percent, 100);
    const logs = await jobs().listJobLogs({ id: job!.id });
    assert.deepEqual(
      logs.lines.map((l) => [l.lineNumber, l.line]),
      [[1, "first line"], [2, "second line"], [3, "third line"]],
    );
  } finally {
    await worker.stop(1000);
    await running;
  }
});

test("a NonRetryableError ends the job DEAD at once; any other error is retried", async () => {
  const type = `ts.fail.${randomUUID().slice(0, 8)}`;
  const worker = executor({
    [type]: async (job) => {
      const { permanent } = job.payload as { permanent: boolean };
      if (permanent) throw new NonRetryableError("cannot work");
      if (job.attempt === 1) throw new Error("flaky");
      return "second time lucky";
    },
  });
  const running = worker.run();
  try {
    const client = jobs();
    const fast = { initialBackoff: { seconds: 0n, nanos: 10_000_000 }, maxBackoff: { seconds: 0n, nanos: 10_000_000 } };
    const permanent = await client.submitJob({ job: { type, maxAttempts: 3, payload: toJsonBytes({ permanent: true }), retryPolicy: fast } });
    const flaky = await client.submitJob({ job: { type, maxAttempts: 3, payload: toJsonBytes({ permanent: false }), retryPolicy: fast } });
    const dead = await finished(permanent.job!.id);
    assert.equal(dead.state, JobState.DEAD);
    assert.equal(dead.attempt, 1);
    assert.equal(dead.lastError, "cannot work");
    const retried = await finished(flaky.job!.id);
    assert.equal(retried.state, JobState.SUCCEEDED, retried.lastError);
    assert.equal(retried.attempt, 2);
    assert.equal(fromJsonBytes(retried.result), "second time lucky");
  } finally {
    await worker.stop(1000);
    await running;
  }
});

test("after a dropped stream the executor re-attaches its running attempt (in_flight)", async () => {
  const type = `ts.slow.${randomUUID().slice(0, 8)}`;
  const events: ExecutorEvent[] = [];
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let started!: () => void;
  const begun = new Promise<void>((resolve) => (started = resolve));
  const worker = executor(
    {
      [type]: async () => {
        started();
        await gate;
        return "kept";
      },
    },
    events,
  );
  const running = worker.run();
  try {
    const { job } = await jobs().submitJob({ job: { type } });
    await begun;
    worker.dropConnection();
    await eventually(async () => (events.some((e) => e.kind === "registered" && e.reattached === 1) ? true : undefined));
    release();
    const done = await finished(job!.id);
    assert.equal(done.state, JobState.SUCCEEDED, done.lastError);
    assert.equal(done.attempt, 1); // the same attempt went on: nothing was retried
    assert.equal(fromJsonBytes(done.result), "kept");
    assert.ok(events.some((e) => e.kind === "disconnected"));
  } finally {
    release();
    await worker.stop(1000);
    await running;
  }
});

test("a LogReport without first_line_number ends the stream INVALID_ARGUMENT naming the field", async () => {
  const client = new Connection({ address: ADDRESS(), token: EXECUTOR_TOKEN() }).client(ExecutorService);
  const outbox = new AsyncQueue<ReturnType<typeof create<typeof ConnectRequestSchema>>>();
  outbox.push(
    create(ConnectRequestSchema, {
      message: { case: "register", value: { name: `ts-raw-${randomUUID()}`, capacity: 1, jobTypes: ["ts.none"] } },
    }),
  );
  const received: string[] = [];
  let failure: unknown;
  try {
    for await (const message of client.connect(outbox)) {
      received.push(message.message.case ?? "");
      if (message.message.case === "registered") {
        outbox.push(
          create(ConnectRequestSchema, {
            message: { case: "log", value: { attempt: { jobId: randomUUID(), attempt: 1 }, lines: ["lost?"] } },
          }),
        );
      }
    }
  } catch (error) {
    failure = error;
  } finally {
    outbox.close();
  }
  assert.equal(received[0], "registered");
  const err = errorDetails(failure);
  assert.equal(err.code, Code.InvalidArgument);
  assert.equal(err.metadata.field, "log.first_line_number");
  assert.deepEqual(err.violations.map((v) => v.field), ["log.first_line_number"]);
});

test("CancelJob aborts the handler's signal and the job ends CANCELLED", async () => {
  const type = `ts.cancel.${randomUUID().slice(0, 8)}`;
  let started!: () => void;
  const begun = new Promise<void>((resolve) => (started = resolve));
  let sawAbort = false;
  const worker = executor({
    [type]: async (job) => {
      started();
      await new Promise<void>((resolve) => job.signal.addEventListener("abort", () => resolve(), { once: true }));
      sawAbort = true;
      throw job.signal.reason;
    },
  });
  const running = worker.run();
  try {
    const { job } = await jobs().submitJob({ job: { type } });
    await begun;
    await eventually(async () => ((await jobs().getJobStatus({ id: job!.id })).job!.state === JobState.RUNNING ? true : undefined));
    await jobs().cancelJob({ id: job!.id, reason: "not needed" });
    const done = await finished(job!.id);
    assert.equal(done.state, JobState.CANCELLED);
    await eventually(async () => (sawAbort ? true : undefined));
  } finally {
    await worker.stop(1000);
    await running;
  }
});
