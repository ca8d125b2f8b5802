// The scheduler's rich errors: a ConnectError (code, message) whose details carry a
// google.rpc.ErrorInfo (domain "jobsched.dev", a reason per kind of refusal, metadata such as
// `field`, `limit`, `job_id`) and, for bad input, a google.rpc.BadRequest.
import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";

export const ERROR_DOMAIN = "jobsched.dev";

export interface JobschedErrorInfo {
  code: Code;
  message: string;
  /** ErrorInfo.reason, for example JOB_NOT_FOUND or IDEMPOTENCY_KEY_REUSED ("" when absent). */
  reason: string;
  /** ErrorInfo.metadata (request_id always; field, limit, job_id, ... where they apply). */
  metadata: Record<string, string>;
  /** BadRequest field violations: (field, description) pairs. */
  violations: { field: string; description: string }[];
  /** RetryInfo.retry_delay in milliseconds, when the scheduler asks to retry later. */
  retryAfterMs?: number;
}

/** What a failed call tells, from any thrown value (a non-Connect error becomes UNKNOWN). */
export function errorDetails(error: unknown): JobschedErrorInfo {
  const err = ConnectError.from(error);
  const [info] = err.findDetails(ErrorInfoSchema);
  const [badRequest] = err.findDetails(BadRequestSchema);
  const [retry] = err.findDetails(RetryInfoSchema);
  const delay = retry?.retryDelay;
  return {
    code: err.code,
    message: err.rawMessage,
    reason: info?.reason ?? "",
    metadata: { ...(info?.metadata ?? {}) },
    violations: (badRequest?.fieldViolations ?? []).map((v) => ({
      field: v.field,
      description: v.description,
    })),
    retryAfterMs: delay ? Number(delay.seconds) * 1000 + delay.nanos / 1e6 : undefined,
  };
}

export { Code, ConnectError };
