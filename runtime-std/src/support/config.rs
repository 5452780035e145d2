//! Loading the configuration: the file system edge in front of the core's `parse_config`.

use std::path::Path;

use anyhow::Context;
use mxgate_core::config::{parse_config, EMBEDDED_DEFAULT};
use mxgate_core::Config;

/// Reads and validates `path`, or the embedded development default when `None`.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read configuration file {}", path.display()))?;
            // The error already names file, line, column and key.
            Ok(parse_config(&text, path)?)
        }
        None => parse_config(EMBEDDED_DEFAULT, Path::new("<embedded default>"))
            .context("the embedded default configuration is invalid (a bug)"),
    }
}
