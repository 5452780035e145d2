//! Synapse worker routing, built in: which worker pool a request goes to, and which
//! backend of that pool.
//!
//! The pieces, each pure and usable alone:
//! - [`table`]: Synapse's worker endpoint table as data ([`WorkerRole`], [`table::ENDPOINTS`]).
//! - [`pattern`]: the compiler for the regex subset the table uses (linear-time matching).
//! - [`router`]: the table compiled for the configured roles; `route(method, target)`.
//! - [`hash`]: routing keys (user, room, origin, client) and rendezvous hashing.
//! - [`balance`]: the balancing policies; `pick` a healthy backend.
//! - [`health`]: per-backend health from probes and connect failures.
//!
//! Per request: `Router::route` gives a [`RouteMatch`] (a role and maybe a sticky key);
//! the role's [`PoolRuntime::pick`] gives a backend index, or `None` (no healthy backend):
//! then the main process serves the request.

pub mod balance;
pub mod hash;
pub mod health;
pub mod pattern;
pub mod router;
pub mod table;

pub use balance::{Policy, PoolRuntime};
pub use hash::{KeyKind, RequestParts};
pub use health::{HealthConfig, HealthEvent, HealthFlags, PoolHealth};
pub use router::{CustomRoute, RouteMatch, Router, RouterError};
pub use table::{RoleSet, WorkerRole};
