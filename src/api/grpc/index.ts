/**
 * @module
 * The Open Inference Protocol over gRPC: the transport ({@link GrpcTransport}), its .proto definitions and the
 * error catalog's gRPC status mapping.
 */
export { GrpcTransport, type GrpcOptions } from './server.js';
export { loadProtos, protoDir, LOADER_OPTIONS, type Protos } from './proto.js';
export { grpcStatus, GRPC_STATUS_BY_HTTP, toServiceError } from './status.js';
