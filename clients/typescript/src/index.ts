// @jobsched/client: the generated messages and services (./gen, from protos/ by buf) and a small
// hand-written layer: a Connection (bearer token, tenant), JSON payload helpers, rich error
// details and an Executor loop.
export { Connection, metadataInterceptor, baseUrlOf, TENANT_METADATA_KEY, type ConnectionOptions } from "./connection.js";
export { toJsonBytes, fromJsonBytes } from "./payloads.js";
export { errorDetails, ERROR_DOMAIN, Code, ConnectError, type JobschedErrorInfo } from "./errors.js";
export {
  Executor,
  NonRetryableError,
  type ExecutorOptions,
  type ExecutorEvent,
  type Handler,
  type JobContext,
} from "./executor.js";
export * from "./gen/jobsched/v1/job_pb.js";
export * from "./gen/jobsched/v1/job_service_pb.js";
export * from "./gen/jobsched/v1/executor_service_pb.js";
export * from "./gen/jobsched/v1/queue_service_pb.js";
export * from "./gen/jobsched/v1/job_type_service_pb.js";
export * from "./gen/jobsched/v1/schedule_service_pb.js";
export * from "./gen/jobsched/v1/cluster_service_pb.js";
export * from "./gen/jobsched/v1/auth_service_pb.js";
export * from "./gen/jobsched/v1/artifact_service_pb.js";
