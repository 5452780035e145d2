//! HTTP/1.1 message syntax: heads, chunked bodies, and the rules for refusing them.

pub mod chunked;
pub mod lines;
pub mod names;
pub mod reject;
pub mod request;
pub mod response;
pub mod target;
pub mod tokens;
