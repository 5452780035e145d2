//! AFL target `uri_preservation`: see [`mxgate_fuzz::targets::uri_preservation`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        mxgate_fuzz::targets::uri_preservation(data);
    });
}
