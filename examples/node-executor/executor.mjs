// A jobsched executor in Node.js for the job type `node.echo`: it reports progress step by step,
// logs a line per step and returns the payload's message. Run it with the TypeScript client
// built (`npm run build` in clients/typescript, or `make node-deps`):
//
//   JOBSCHED_ADDRESS=127.0.0.1:50051 node examples/node-executor/executor.mjs
//
// Environment: JOBSCHED_ADDRESS (host:port or an http(s) URL; default 127.0.0.1:50051),
// JOBSCHED_TOKEN (an API key with the executor role, for --auth required), JOBSCHED_TENANT,
// JOBSCHED_EXECUTOR_NAME (default node-<hostname>:<pid>), JOBSCHED_CAPACITY (default 4).
// SIGTERM or SIGINT drains it: no new work, running jobs get 10 s, then it exits 0.
//
// A node.echo payload is JSON: {"message": "hi", "steps": 3, "step_ms": 50}.
import { hostname } from "node:os";
import { Executor, NonRetryableError } from "@jobsched/client";

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });

/** node.echo: `steps` steps of `step_ms` each, then the message back. */
async function echo(job) {
  const { message, steps = 3, step_ms = 50 } = job.payload ?? {};
  if (typeof message !== "string") throw new NonRetryableError('payload: "message" must be a string');
  if (!Number.isInteger(steps) || steps < 1 || steps > 1000) {
    throw new NonRetryableError('payload: "steps" must be a whole number in [1, 1000]');
  }
  for (let step = 1; step <= steps; step++) {
    await sleep(step_ms, job.signal);
    job.log(`step ${step} of ${steps}`);
    job.progress((100 * step) / steps, `step ${step}`, `echoing ${message.length} characters`);
  }
  return { echo: message, steps, executor: "node", attempt: job.attempt };
}

const executor = new Executor({
  address: process.env.JOBSCHED_ADDRESS ?? "127.0.0.1:50051",
  token: process.env.JOBSCHED_TOKEN || undefined,
  tenant: process.env.JOBSCHED_TENANT || undefined,
  name: process.env.JOBSCHED_EXECUTOR_NAME ?? `node-${hostname()}:${process.pid}`,
  capacity: Number(process.env.JOBSCHED_CAPACITY ?? 4),
  handlers: { "node.echo": echo },
  onEvent: (event) => console.log(JSON.stringify({ event: event.kind, ...event })),
});

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.once(signal, () => {
    console.log(JSON.stringify({ event: "stopping", signal }));
    void executor.stop(10_000);
  });
}

await executor.run();
console.log(JSON.stringify({ event: "stopped" }));
