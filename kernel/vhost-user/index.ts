// The vhost-user back-end: public surface (see server.ts for the API and its events).
export { startVhostUserServer, VhostUserServer, type VhostUserServerOptions, type SessionEnd, type VhostUserLogger, type LogLevel } from './server.js';
export { VhostUserError, type VhostUserErrorCode } from './errors.js';
export { VhostUserFrontend, FrontendError } from './frontend-client.js';
export { DEFAULT_PROTOCOL_FEATURES } from './session.js';
export { ProtocolFeature, Request, VHOST_USER_F_PROTOCOL_FEATURES, requestName } from './protocol.js';
