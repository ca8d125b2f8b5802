// Connection: a gRPC transport (HTTP/2, @connectrpc/connect-node) with the scheduler's call
// metadata: `authorization: Bearer <key>` when a token is given and `x-jobsched-tenant` when a
// tenant is. Every service client of the package is made from one Connection.
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { DescService } from "@bufbuild/protobuf";
import type { SecureClientSessionOptions } from "node:http2";

/** The request metadata key that selects a call's tenant (see JobService in the protos). */
export const TENANT_METADATA_KEY = "x-jobsched-tenant";

export interface ConnectionOptions {
  /** host:port of a scheduler, or a URL (http://host:port, https://host:port for TLS). */
  address: string;
  /** An API key, sent as `authorization: Bearer <token>` (schedulers run with --auth required). */
  token?: string;
  /** The tenant of every call; the scheduler's default ("default") when unset. */
  tenant?: string;
  /** TLS options (ca, cert, key, servername) for an https:// address. */
  tls?: SecureClientSessionOptions;
  /** A deadline for each unary call, in milliseconds (none when unset). */
  timeoutMs?: number;
}

/** The interceptor that adds the credential and the tenant to every call. */
export function metadataInterceptor(token?: string, tenant?: string): Interceptor {
  if (token !== undefined && /[\r\n]/.test(token)) {
    throw new Error("token: must not contain line breaks");
  }
  return (next) => async (req) => {
    if (token) req.header.set("authorization", `Bearer ${token}`);
    if (tenant) req.header.set(TENANT_METADATA_KEY, tenant);
    return next(req);
  };
}

/** A base URL from an address: host:port is plaintext (http), URLs are kept. */
export function baseUrlOf(address: string): string {
  if (/^https?:\/\//.test(address)) return address.replace(/\/+$/, "");
  if (!/^[^/\s]+:\d+$/.test(address)) {
    throw new Error(`address: ${JSON.stringify(address)} is neither host:port nor an http(s) URL`);
  }
  return `http://${address}`;
}

export class Connection {
  readonly transport: Transport;
  readonly options: ConnectionOptions;

  constructor(options: ConnectionOptions) {
    this.options = options;
    this.transport = createGrpcTransport({
      baseUrl: baseUrlOf(options.address),
      interceptors: [metadataInterceptor(options.token, options.tenant)],
      nodeOptions: options.tls,
      defaultTimeoutMs: options.timeoutMs,
      // HTTP/2 keepalive: proxies drop idle streams (the executor stream has its own heartbeats).
      pingIntervalMs: 30_000,
    });
  }

  /** A client of one service (for example JobService) over this connection. */
  client<T extends DescService>(service: T): Client<T> {
    return createClient(service, this.transport);
  }
}
