//! The control socket: `timens`, the OCI hook and the clock library ask the daemon here.
//!
//! - `server`: the socket, its limits and worker pool, who may ask what, and dispatch.
//! - `limits`: the numbers and the pure accounting behind them (per-uid counts, the request
//!   framer, the root-first work queue).
//! - `sandbox`: create, release and end sandboxes; the store's per-sandbox views.
//! - `status`: `timens status` and what a caller may see of it.
//! - `reattach`: sandboxes of a previous daemon get their /proc back.
//! - `housekeeping`: the periodic loop (re-attach, reaping, idle exit).

mod housekeeping;
mod limits;
mod reattach;
mod sandbox;
mod server;
mod status;

pub use housekeeping::reap_dead_namespaces;
pub use server::serve;
