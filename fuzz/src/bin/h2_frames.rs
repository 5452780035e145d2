//! AFL target `h2_frames`: see [`mxgate_fuzz::h2::h2_frames`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        mxgate_fuzz::h2::h2_frames(data);
    });
}
