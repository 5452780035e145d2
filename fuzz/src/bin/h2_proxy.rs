//! AFL target `h2_proxy`: see [`mxgate_fuzz::h2proxy::h2_proxy`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        mxgate_fuzz::h2proxy::h2_proxy(data);
    });
}
