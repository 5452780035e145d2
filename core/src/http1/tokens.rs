//! Small byte-level helpers for header values: comma lists, tokens, numbers.

pub fn eq_ignore_case(a: &[u8], lower: &[u8]) -> bool {
    a.len() == lower.len()
        && a.iter()
            .zip(lower)
            .all(|(x, y)| x.to_ascii_lowercase() == *y)
}

/// `tchar` (RFC 9110 §5.6.2) by byte: a table, as every byte of a token is looked up.
const TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

/// A list element that is not a single token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAToken;

/// Calls `f` with each token of a comma-separated list (`#token` in RFC 9110), skipping
/// empty elements. Errors if an element is not a single token.
pub fn for_each_token(value: &[u8], mut f: impl FnMut(&[u8])) -> Result<(), NotAToken> {
    if !value.is_empty() && value.iter().all(|&b| is_tchar(b)) {
        // The usual value: one token (no comma or whitespace, which are not tchars).
        f(value);
        return Ok(());
    }
    for element in value.split(|&b| b == b',') {
        let tok = super::request::trim_ows(element);
        if tok.is_empty() {
            continue;
        }
        if !tok.iter().all(|&b| is_tchar(b)) {
            return Err(NotAToken);
        }
        f(tok);
    }
    Ok(())
}

/// A Content-Length value: 1*DIGIT, or a list of identical such values (RFC 9110 §8.6
/// lets a recipient accept `42, 42`). `None` for anything else, including overflow.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let digits = |d: &[u8]| d.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    if (1..=18).contains(&value.len()) && value.iter().all(u8::is_ascii_digit) {
        // The usual value: one plain number.
        return Some(digits(value));
    }
    let mut result: Option<u64> = None;
    for element in value.split(|&b| b == b',') {
        let digits = super::request::trim_ows(element);
        if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits
            .iter()
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        match result {
            Some(prev) if prev != n => return None,
            _ => result = Some(n),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_plain_digits() {
        assert_eq!(parse_content_length(b"42"), Some(42));
        assert_eq!(parse_content_length(b"42, 42"), Some(42));
        assert_eq!(parse_content_length(b"42, 43"), None);
        assert_eq!(parse_content_length(b"+42"), None);
        assert_eq!(parse_content_length(b"-1"), None);
        assert_eq!(parse_content_length(b"0x10"), None);
        assert_eq!(parse_content_length(b""), None);
        assert_eq!(parse_content_length(b"4 2"), None);
        assert_eq!(parse_content_length(b"99999999999999999999999"), None);
    }

    #[test]
    fn tchar_table_is_rfc_9110() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(is_tchar(b), expected, "{b}");
        }
    }

    #[test]
    fn token_lists_split_on_commas() {
        let mut seen = Vec::new();
        for_each_token(b" gzip ,, chunked", |t| seen.push(t.to_vec())).unwrap();
        assert_eq!(seen, vec![b"gzip".to_vec(), b"chunked".to_vec()]);
        assert!(for_each_token(b"chunked x", |_| {}).is_err());
    }
}
