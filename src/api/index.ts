/**
 * @module
 * The api/ folder's public surface: other folders import from here only.
 */
export { adminRoutes, registerOpenApi } from './admin/routes.js';
export { routingAdminRoutes } from './admin/routing.js';
export { tenancyRoutes } from './admin/tenancy.js';
export { v2Routes } from './v2/routes.js';
export { v2ExtensionRoutes } from './v2/extensions.js';
export { frameworkErrors, installErrorShape } from './reply-error.js';
export { installShutdownGate, settlesWithin } from './shutdown.js';
export { installAccessLog } from './access-log.js';
export { lazyChildLogger, requestIdGenerator } from './request-scope.js';
export { monitoringAdminRoutes } from './admin/monitoring.js';
export { featureDataRoutes } from './admin/features-data.js';
export { featureDefinitionRoutes } from './admin/features-defs.js';
export { llmRoutes } from './openai/routes.js';
export { batchRoutes } from './openai/batches.js';
export { batchJobRoutes, type BatchJobRouteOptions } from './admin/batch-jobs.js';
export { InferenceRowRunner } from './admin/batch-runner.js';
export { OpenAiLineRunner } from './openai/line-runner.js';
export { llmAdminRoutes } from './admin/llm.js';
export { GrpcTransport, type GrpcOptions, grpcStatus, GRPC_STATUS_BY_HTTP, loadProtos } from './grpc/index.js';
export { uiRoutes } from './ui.js';
export { overviewRoutes } from './admin/overview.js';
