//! AFL target `framing_agreement`: see [`mxgate_fuzz::targets::framing_agreement`].

fn main() {
    afl::fuzz!(|data: &[u8]| {
        mxgate_fuzz::targets::framing_agreement(data);
    });
}
