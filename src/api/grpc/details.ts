/**
 * @module
 * gRPC's rich error model: the `grpc-status-details-bin` trailer, a serialized `google.rpc.Status` whose `details`
 * carry `google.rpc.ErrorInfo` (reason: the catalog code, domain `switchyard`; its metadata map is not used) on every catalog error and
 * `google.rpc.RetryInfo` (retry_delay) when a retry can succeed later — what gRPC clients and retry policies
 * read (e.g. `google.rpc.RetryInfo` in grpcio-status, grpc-go's `status.Details()`), beside the plain
 * `retry-after` / `x-switchyard-error-code` trailers.
 *
 * The messages are defined here from the published google/rpc and google/protobuf definitions (message and field
 * names and numbers are the wire format) and encoded with protobufjs.
 */
import protobuf from 'protobufjs';

const root = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: { code: { type: 'int32', id: 1 }, message: { type: 'string', id: 2 }, details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 } },
            },
            RetryInfo: { fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } } },
            ErrorInfo: { fields: { reason: { type: 'string', id: 1 }, domain: { type: 'string', id: 2 } } },
          },
        },
      },
    },
  },
});

const StatusType = root.lookupType('google.rpc.Status');
const RetryInfoType = root.lookupType('google.rpc.RetryInfo');
const ErrorInfoType = root.lookupType('google.rpc.ErrorInfo');

export const ERROR_DOMAIN = 'switchyard';

/** `google.rpc.Status` bytes for a failed call: ErrorInfo (reason = `reason`), and RetryInfo when `retryAfterS` is set. */
export function statusDetails(code: number, message: string, reason: string, retryAfterS: number | null): Buffer {
  const details = [
    {
      type_url: 'type.googleapis.com/google.rpc.ErrorInfo',
      value: ErrorInfoType.encode(ErrorInfoType.create({ reason, domain: ERROR_DOMAIN })).finish(),
    },
  ];
  if (retryAfterS !== null) {
    details.push({
      type_url: 'type.googleapis.com/google.rpc.RetryInfo',
      value: RetryInfoType.encode(RetryInfoType.fromObject({ retry_delay: { seconds: retryAfterS, nanos: 0 } })).finish(),
    });
  }
  return Buffer.from(StatusType.encode(StatusType.fromObject({ code, message, details })).finish());
}
