// JobService from TypeScript against a real scheduler: JSON payloads, the bearer token and the
// tenant, and the rich errors (reasons and ErrorInfo metadata).
import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import {
  Code,
  Connection,
  JobService,
  JobState,
  errorDetails,
  fromJsonBytes,
  toJsonBytes,
} from "../src/index.js";
import { ADDRESS, OPERATOR_TOKEN, TENANT } from "./env.js";

const jobs = (token?: string, tenant?: string) =>
  new Connection({ address: ADDRESS(), token, tenant, timeoutMs: 10_000 }).client(JobService);

async function refusal(call: Promise<unknown>) {
  try {
    await call;
  } catch (error) {
    return errorDetails(error);
  }
  assert.fail("the call succeeded");
}

test("a job submitted with a JSON payload reads back with it", async () => {
  const client = jobs(OPERATOR_TOKEN(), TENANT());
  const { job, created } = await client.submitJob({
    job: { type: "ts.unclaimed", payload: toJsonBytes({ n: 1, text: "héllo" }), labels: { from: "ts" } },
  });
  assert.ok(created);
  assert.equal(job?.state, JobState.QUEUED);
  const read = await client.getJobStatus({ id: job!.id });
  assert.deepEqual(fromJsonBytes(read.job!.payload), { n: 1, text: "héllo" });
  assert.equal(read.job!.labels.from, "ts");
});

test("a reused idempotency key names the job that holds it in ErrorInfo metadata", async () => {
  const client = jobs(OPERATOR_TOKEN(), TENANT());
  const key = `k-${randomUUID()}`;
  const first = await client.submitJob({ job: { type: "ts.unclaimed", idempotencyKey: key, payload: toJsonBytes(1) } });
  const again = await client.submitJob({ job: { type: "ts.unclaimed", idempotencyKey: key, payload: toJsonBytes(1) } });
  assert.equal(again.created, false);
  assert.equal(again.job!.id, first.job!.id);
  const err = await refusal(
    client.submitJob({ job: { type: "ts.unclaimed", idempotencyKey: key, payload: toJsonBytes(2) } }),
  );
  assert.equal(err.code, Code.AlreadyExists);
  assert.equal(err.reason, "IDEMPOTENCY_KEY_REUSED");
  assert.equal(err.metadata.job_id, first.job!.id);
  assert.equal(err.metadata.idempotency_key, key);
});

test("a violation names its field and limit in ErrorInfo metadata and BadRequest", async () => {
  const err = await refusal(jobs(OPERATOR_TOKEN(), TENANT()).submitJob({ job: { type: "ts.x", priority: 101 } }));
  assert.equal(err.code, Code.InvalidArgument);
  assert.equal(err.reason, "INVALID_ARGUMENT");
  assert.equal(err.metadata.field, "job.priority");
  assert.equal(err.metadata.limit, "[0, 100]");
  assert.deepEqual(err.violations.map((v) => v.field), ["job.priority"]);
  assert.ok(err.metadata.request_id);
});

test("an unknown job is NOT_FOUND with its id in the metadata", async () => {
  const id = randomUUID();
  const err = await refusal(jobs(OPERATOR_TOKEN(), TENANT()).getJobStatus({ id }));
  assert.equal(err.code, Code.NotFound);
  assert.equal(err.reason, "JOB_NOT_FOUND");
  assert.equal(err.metadata.job_id, id);
});

test("the bearer token is required, and the tenant must be the key's", async () => {
  const missing = await refusal(jobs(undefined, TENANT()).getJobStatus({ id: randomUUID() }));
  assert.equal(missing.code, Code.Unauthenticated);
  assert.equal(missing.reason, "CREDENTIAL_MISSING");
  const other = await refusal(jobs(OPERATOR_TOKEN(), "someone-else").getJobStatus({ id: randomUUID() }));
  assert.equal(other.code, Code.PermissionDenied);
  assert.equal(other.reason, "TENANT_NOT_ALLOWED");
});

test("a job of the key's tenant is read without naming the tenant (a one-tenant key)", async () => {
  const { job } = await jobs(OPERATOR_TOKEN(), TENANT()).submitJob({ job: { type: "ts.unclaimed" } });
  const read = await jobs(OPERATOR_TOKEN()).getJobStatus({ id: job!.id });
  assert.equal(read.job!.id, job!.id);
});

test("JSON helpers refuse what is not JSON", () => {
  assert.equal(fromJsonBytes(new Uint8Array()), undefined);
  assert.throws(() => fromJsonBytes(new TextEncoder().encode("{nope")), SyntaxError);
  assert.throws(() => toJsonBytes(undefined), TypeError);
});
