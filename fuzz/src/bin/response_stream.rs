//! AFL target `response_stream`: see [`mxgate_fuzz::targets::response_stream`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        mxgate_fuzz::targets::response_stream(data);
    });
}
