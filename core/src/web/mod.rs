//! The web console the gateway serves (the seed's browser client): requests come in from the
//! driver's HTTPS front already parsed, responses and streamed results go back, and every rule in
//! between (sessions, CSRF, login limits, what a form asks the gateway) lives here. It never
//! touches a socket, a certificate or TLS: the driver does.

mod audit_page;
mod console;
mod forms;
mod http;
mod limiter;
mod pages;
mod policy_page;
mod run_view;
mod session;
mod status_page;
#[cfg(test)]
mod tests;
mod waiting;

pub use console::{ConsoleOutput, Sources, WebConsole};
pub use forms::DEFAULT_FANOUT;
pub use http::{
    CONTENT_SECURITY_POLICY, MAX_BODY, Method, RequestId, WebLimits, WebRequest, WebResponse, field,
};
pub use limiter::{Limited, LoginLimiter};
pub use session::{ConsoleKeys, CookieError, LOGIN_COOKIE, SESSION_COOKIE};

/// The console's script and style sheet, served from `/static/`.
pub const CONSOLE_JS: &[u8] = include_bytes!("assets/console.js");
pub const CONSOLE_CSS: &[u8] = include_bytes!("assets/console.css");
