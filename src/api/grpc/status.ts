/**
 * @module
 * The one mapping from the error catalog (src/errors.ts) to gRPC status codes, and a thrown error as a gRPC
 * `ServiceError`: the status, the message, and trailing metadata carrying the catalog code
 * (`x-switchyard-error-code`), `retry-after` (seconds) when a retry can succeed later and `x-should-retry: false`
 * on server errors a retry cannot fix — the same hints the REST transports send as headers — and the same facts in
 * gRPC's rich error model (`grpc-status-details-bin`: ErrorInfo, RetryInfo; details.ts).
 *
 * The gRPC status follows from the catalog's HTTP status (docs/errors.md lists the table); a test keeps every
 * catalog code mapped.
 */
import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import type { ErrorCode } from '../../errors.js';
import { toWireError } from '../reply-error.js';
import { statusDetails } from './details.js';

/** gRPC status by the catalog's HTTP status. */
export const GRPC_STATUS_BY_HTTP: Readonly<Record<number, Status>> = Object.freeze({
  400: Status.INVALID_ARGUMENT,
  401: Status.UNAUTHENTICATED,
  403: Status.PERMISSION_DENIED,
  404: Status.NOT_FOUND,
  409: Status.FAILED_PRECONDITION,
  413: Status.RESOURCE_EXHAUSTED,
  415: Status.INVALID_ARGUMENT,
  429: Status.RESOURCE_EXHAUSTED,
  499: Status.CANCELLED,
  500: Status.INTERNAL,
  502: Status.UNAVAILABLE,
  503: Status.UNAVAILABLE,
  504: Status.DEADLINE_EXCEEDED,
});

/** Codes whose gRPC status is more precise than their HTTP status says. */
const BY_CODE: Partial<Record<ErrorCode, Status>> = {
  // A create that collides with an existing record is gRPC's ALREADY_EXISTS; other 409s are FAILED_PRECONDITION.
  SY_ERR_TENANT_CONFLICT: Status.ALREADY_EXISTS,
  SY_ERR_REGISTRY_CONFLICT: Status.ALREADY_EXISTS,
};

/** The gRPC status for a catalog code with an HTTP status (relayed errors keep their own status). */
export function grpcStatus(code: ErrorCode, httpStatus: number): Status {
  return BY_CODE[code] ?? GRPC_STATUS_BY_HTTP[httpStatus] ?? (httpStatus >= 500 ? Status.INTERNAL : Status.INVALID_ARGUMENT);
}

/** Any thrown error as the ServiceError to answer a call with (unknown errors: INTERNAL, without internals). */
export function toServiceError(e: unknown): ServiceError {
  const w = toWireError(e);
  const metadata = new Metadata();
  metadata.set('x-switchyard-error-code', w.code);
  if (w.retryAfterS !== null) metadata.set('retry-after', String(w.retryAfterS));
  if (w.status >= 500 && !w.retryable) metadata.set('x-should-retry', 'false');
  const code = grpcStatus(w.code, w.status);
  metadata.set('grpc-status-details-bin', statusDetails(code, w.message, w.code, w.retryAfterS));
  return Object.assign(new Error(w.message), { code, details: w.message, metadata });
}
