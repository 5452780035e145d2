//! Configuration: the validated model the engine runs on, and the TOML file that produces it.

mod cidr;
pub mod file;
mod model;

pub use cidr::{canonical as canonical_ip, Cidr, CidrError};
pub use file::{parse_config, render_effective, ConfigError, EMBEDDED_DEFAULT};
pub use model::*;
