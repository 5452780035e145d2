//! AFL target `request_stream`: see [`mxgate_fuzz::targets::request_stream`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        mxgate_fuzz::targets::request_stream(data);
    });
}
