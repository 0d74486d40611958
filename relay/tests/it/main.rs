//! The relay's integration tests: real WebSockets on 127.0.0.1:0, the real server, agents
//! and hand-driven clients (one test binary, modules by topic).

mod dispatch;
mod host;
mod protocol;
mod refusals;
mod rotation;
mod sessions;
mod support;
