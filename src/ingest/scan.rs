//! A fast, borrowing scanner for the common shape of an event (the hot path of ingest).
//!
//! Why: serde_json (borrowed, with `RawValue`) costs ~1 µs per event here, about a fifth
//! of the per-event CPU budget of Kafka ingest. Almost every real event is a flat object
//! with the contract's keys, escape-free strings and plain numbers; this scanner reads
//! exactly that in one pass without allocating (the labels are listed only on demand).
//!
//! **Invariant (what makes it safe):** [`scan`] either returns the very fields serde_json
//! would have produced for the same bytes, or `None` — and on `None` the caller parses
//! with serde_json, whose result (including every rejection code and message) is
//! authoritative. So anything unusual — escapes, `null`, unknown or duplicate keys,
//! non-string labels, nested values, malformed JSON, trailing bytes — simply takes the
//! slow path; the scanner never produces an error of its own. `tests::fast_path_agrees`
//! (proptest) checks the invariant against serde_json on generated and mutated inputs.

use std::borrow::Cow;

/// The contract's fields as serde would see them: strings (escape-free, borrowed) and
/// the raw JSON text of `ts`, `value` and `cost` (strings keep their quotes).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Fields<'a> {
    pub event_id: Option<Cow<'a, str>>,
    pub ts: Option<&'a str>,
    pub tenant: Option<Cow<'a, str>>,
    pub metric: Option<Cow<'a, str>>,
    pub value: Option<&'a str>,
    pub unit: Option<Cow<'a, str>>,
    pub sku: Option<Cow<'a, str>>,
    pub cost: Option<&'a str>,
    pub currency: Option<Cow<'a, str>>,
    pub labels: Option<LabelsField<'a>>,
}

/// Called between every two tokens; events rarely hold whitespace, so it must inline to a
/// single compare (it was 5 % of `prepare` as a call).
#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Bytes a string scan must stop at: `"`, `\\`, control characters (< 0x20) and
/// non-ASCII bytes (≥ 0x80, which need UTF-8 validation). Nonzero iff one of the 8 bytes
/// of `x` is such a byte, and then its lowest set bit lies in the first one: the
/// zero-byte test `(v - 0x01..) & !v & 0x80..` can only flag bytes above a true match
/// (through the borrow), never produce a flag on its own.
#[inline]
fn stops(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(x ^ (ONES * b'"' as u64));
    let backslash = zero_byte(x ^ (ONES * b'\\' as u64));
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    quote | backslash | control | (x & HIGH)
}

/// The index of the first stop byte (see [`stops`]) at or after `j`, or of the last few
/// bytes (fewer than 8) that follow the final whole word: the caller looks at them one
/// by one. Most strings of an event fit one 16-byte step.
#[inline(always)]
fn skip_plain(b: &[u8], mut j: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    while let Some(chunk) = b.get(j..j + 16) {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; the unaligned load reads exactly
        // the 16 bytes of `chunk`.
        let m = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr() as *const __m128i);
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // Signed: bytes >= 0x80 are negative, so one compare flags them and < 0x20.
            let low_or_high = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), low_or_high)) as u32
        };
        if m != 0 {
            return j + m.trailing_zeros() as usize;
        }
        j += 16;
    }
    while let Some(chunk) = b.get(j..j + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let m = stops(u64::from_le_bytes(word));
        if m != 0 {
            return j + (m.trailing_zeros() / 8) as usize;
        }
        j += 8;
    }
    j
}

/// An escape-free string starting at `b[i] == '"'`: (contents, index after the closing
/// quote). `None` on escapes, control characters or invalid UTF-8 (serde decides those).
/// Scans 16 or 8 bytes at a time ([`skip_plain`]); only strings with non-ASCII bytes are
/// run through UTF-8 validation.
fn string(b: &[u8], i: usize) -> Option<(&str, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    let mut ascii = true;
    loop {
        j = skip_plain(b, j);
        match *b.get(j)? {
            b'"' => break,
            b'\\' => return None,
            c if c < 0x20 => return None,
            c => {
                ascii &= c < 0x80;
                j += 1;
            }
        }
    }
    let bytes = &b[start..j];
    let text = if ascii {
        // SAFETY: every byte of `bytes` was seen above and is < 0x80: ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    } else {
        std::str::from_utf8(bytes).ok()?
    };
    Some((text, j + 1))
}

/// A JSON number per RFC 8259 starting at `i`: index after it, or `None` if malformed.
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i = digits(b, i)?,
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// The raw text of a string or number value at `i` (what `RawValue::get` returns).
fn raw(b: &[u8], i: usize) -> Option<(&str, usize)> {
    let end = if b.get(i) == Some(&b'"') {
        string(b, i)?.1
    } else {
        number(b, i)?
    };
    let text = b.get(i..end)?;
    // SAFETY: a number is ASCII by `number`'s grammar; a string is its two ASCII quotes
    // around contents `string` checked to be UTF-8 (ASCII, or validated).
    Some((unsafe { std::str::from_utf8_unchecked(text) }, end))
}

/// The contract's keys with their quotes, by first letter.
const KEYS: [&str; 10] = [
    "\"event_id\"",
    "\"ts\"",
    "\"tenant\"",
    "\"metric\"",
    "\"value\"",
    "\"unit\"",
    "\"sku\"",
    "\"cost\"",
    "\"currency\"",
    "\"labels\"",
];

/// A quoted key as a little-endian 16-byte word and the mask of its bytes, so checking
/// for it is one masked compare, not a `memcmp` call. Every key is at most 10 bytes.
const fn key_word(k: &str) -> (u128, u128) {
    let b = k.as_bytes();
    let mut word = 0u128;
    let mut i = 0;
    while i < b.len() {
        word |= (b[i] as u128) << (8 * i);
        i += 1;
    }
    (word, (1u128 << (8 * b.len())) - 1)
}

const KEY_WORDS: [(u128, u128); 10] = {
    let mut w = [(0, 0); 10];
    let mut i = 0;
    while i < KEYS.len() {
        w[i] = key_word(KEYS[i]);
        i += 1;
    }
    w
};

/// A contract key at `b[i]` read by comparing with the expected literal instead of
/// scanning: (key, index after its closing quote). `None` means "scan it" — exactly the
/// same answer as [`string`] would give, since a literal is escape-free ASCII ending at
/// its quote. Keys within 16 bytes of the end are always scanned.
#[inline(always)]
fn known_key(b: &[u8], i: usize) -> Option<(&'static str, usize)> {
    let range = match b.get(i + 1)? {
        b'e' => 0..1,
        b't' => 1..3,
        b'm' => 3..4,
        b'v' => 4..5,
        b'u' => 5..6,
        b's' => 6..7,
        b'c' => 7..9,
        b'l' => 9..10,
        _ => return None,
    };
    let mut word = [0u8; 16];
    word.copy_from_slice(b.get(i..i + 16)?);
    let word = u128::from_le_bytes(word);
    range.into_iter().find_map(|k| {
        let (key, mask) = KEY_WORDS[k];
        let quoted = KEYS[k];
        (word & mask == key).then(|| (&quoted[1..quoted.len() - 1], i + quoted.len()))
    })
}

/// Scans one event; `None` means "use serde_json" (see the module invariant).
pub(crate) fn scan(b: &[u8]) -> Option<Fields<'_>> {
    // Outside strings only ASCII structure and digits are accepted, and every string is
    // checked by `string`, so the payload is not validated as UTF-8 as a whole.
    let mut f = Fields::default();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, next) = match known_key(b, i) {
                Some(k) => k,
                None => string(b, i)?,
            };
            i = skip_ws(b, next);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            fn put<T>(slot: &mut Option<T>, v: T) -> Option<()> {
                // A duplicate key is an error for serde's derived struct: leave it to serde.
                if slot.is_some() {
                    return None;
                }
                *slot = Some(v);
                Some(())
            }
            let text = |i| string(b, i).map(|(v, n)| (Cow::Borrowed(v), n));
            i = match key {
                "event_id" => text(i).and_then(|(v, n)| put(&mut f.event_id, v).map(|_| n))?,
                "tenant" => text(i).and_then(|(v, n)| put(&mut f.tenant, v).map(|_| n))?,
                "metric" => text(i).and_then(|(v, n)| put(&mut f.metric, v).map(|_| n))?,
                "unit" => text(i).and_then(|(v, n)| put(&mut f.unit, v).map(|_| n))?,
                "sku" => text(i).and_then(|(v, n)| put(&mut f.sku, v).map(|_| n))?,
                "currency" => text(i).and_then(|(v, n)| put(&mut f.currency, v).map(|_| n))?,
                "ts" => raw(b, i).and_then(|(v, n)| put(&mut f.ts, v).map(|_| n))?,
                "value" => raw(b, i).and_then(|(v, n)| put(&mut f.value, v).map(|_| n))?,
                "cost" => raw(b, i).and_then(|(v, n)| put(&mut f.cost, v).map(|_| n))?,
                "labels" => {
                    let (labels, n) = labels(b, i)?;
                    put(&mut f.labels, labels)?;
                    n
                }
                _ => return None,
            };
            i = skip_ws(b, i);
            match b.get(i)? {
                b',' => i = skip_ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(f)
}

/// A label name and value, borrowed from the payload when free of escapes.
pub type Pair<'a> = (Cow<'a, str>, Cow<'a, str>);
pub type Pairs<'a> = Vec<Pair<'a>>;

/// An event's `labels` object.
pub enum LabelsField<'a> {
    /// The object's JSON text as the scanner read it, every key and value an escape-free
    /// string (checked). Its pairs are listed only when needed: an event of a shape seen
    /// before needs none (see the pipeline's series cache).
    Text(&'a str),
    /// Pairs as serde decoded them.
    Pairs(Pairs<'a>),
}

impl<'a> LabelsField<'a> {
    /// The pairs in input order (duplicates kept). `None` only if a `Text` is not what
    /// the scanner accepted, which the scanner never produces.
    pub fn pairs(&self) -> Option<Cow<'_, [Pair<'a>]>> {
        match self {
            LabelsField::Pairs(p) => Some(Cow::Borrowed(p)),
            LabelsField::Text(t) => {
                let mut out = Vec::with_capacity(4);
                each_label(t.as_bytes(), 0, |k, v| out.push((Cow::Borrowed(k), Cow::Borrowed(v))))?;
                Some(Cow::Owned(out))
            }
        }
    }
}

/// Equal when the pairs are (the form does not matter): what serde and the scanner agree on.
impl PartialEq for LabelsField<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.pairs() == other.pairs()
    }
}

impl std::fmt::Debug for LabelsField<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.pairs().fmt(f)
    }
}

/// An object of escape-free string values at `b[i] == '{'`: calls `each` per pair in
/// input order and returns the index after the object.
fn each_label<'b>(b: &'b [u8], mut i: usize, mut each: impl FnMut(&'b str, &'b str)) -> Option<usize> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        let (k, n) = string(b, i)?;
        i = skip_ws(b, n);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let (v, n) = string(b, skip_ws(b, i + 1))?;
        each(k, v);
        i = skip_ws(b, n);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The `labels` object at `i`, checked but not listed: (its text, index after it).
fn labels(b: &[u8], i: usize) -> Option<(LabelsField<'_>, usize)> {
    let end = each_label(b, i, |_, _| {})?;
    let text = b.get(i..end)?;
    // SAFETY: `each_label` accepted only ASCII structure between strings `string` checked
    // to be UTF-8 (ASCII, or validated).
    Some((LabelsField::Text(unsafe { std::str::from_utf8_unchecked(text) }), end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_the_generator_shape() {
        let e = br#"{"event_id":"gen-1","ts":"2026-11-22T03:00:00.000000001Z","tenant":"tenant-001","metric":"m","value":1.250,"unit":"hour","sku":"s","cost":"0.10","currency":"USD","labels":{"region":"eu","a":"b"}}"#;
        let f = scan(e).unwrap();
        assert_eq!(f.event_id.as_deref(), Some("gen-1"));
        assert_eq!(f.ts, Some("\"2026-11-22T03:00:00.000000001Z\""));
        assert_eq!(f.value, Some("1.250"));
        assert_eq!(f.cost, Some("\"0.10\""));
        assert_eq!(f.labels.unwrap().pairs().unwrap().len(), 2);
        let f = scan(b" { \"ts\" : -12 , \"labels\" : { } } \n").unwrap();
        assert_eq!(f.ts, Some("-12"));
        assert_eq!(f.labels, Some(LabelsField::Pairs(Vec::new())));
    }

    proptest::proptest! {
        /// `stops` flags a word iff one of its bytes is a stop byte, and its lowest flag
        /// is in the first such byte (what `string` relies on to skip ahead).
        #[test]
        fn stops_finds_the_first_stop_byte(word in proptest::prelude::any::<[u8; 8]>()) {
            let is_stop = |c: u8| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c);
            let m = stops(u64::from_le_bytes(word));
            match word.iter().position(|&c| is_stop(c)) {
                None => proptest::prop_assert_eq!(m, 0),
                Some(first) => proptest::prop_assert_eq!((m.trailing_zeros() / 8) as usize, first),
            }
        }
    }

    proptest::proptest! {
        /// `skip_plain` stops at the first stop byte, or leaves fewer than 8 bytes to the
        /// caller, never skipping a stop byte.
        #[test]
        fn skip_plain_stops_at_the_first_stop_byte(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            plain in proptest::collection::vec(b'a'..=b'z', 0..60),
            start in 0usize..8,
        ) {
            // Long plain runs (the common case) followed by arbitrary bytes.
            let b: Vec<u8> = plain.iter().chain(&bytes).copied().collect();
            let is_stop = |c: u8| c == b'"' || c == b'\\' || !(0x20..0x80).contains(&c);
            let j = start.min(b.len());
            let r = skip_plain(&b, j);
            proptest::prop_assert!(r >= j && r <= b.len());
            proptest::prop_assert!(b[j..r].iter().all(|&c| !is_stop(c)));
            proptest::prop_assert!(r + 8 > b.len() || is_stop(b[r]));
        }

        /// A key read as a known literal is the key `string` reads, ending at the same place.
        #[test]
        fn known_keys_read_like_strings(
            key in proptest::sample::select(KEYS.to_vec()),
            cut in 0usize..12,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
        ) {
            let mut b: Vec<u8> = key.as_bytes()[..cut.min(key.len())].to_vec();
            b.extend_from_slice(&tail);
            if let Some(k) = known_key(&b, 0) {
                proptest::prop_assert_eq!(Some(k), string(&b, 0));
            }
            // Followed by the rest of an event, a whole key is always recognised.
            let whole: Vec<u8> = key.bytes().chain(tail.iter().copied()).chain(*b":\"0123456789abcdef\"}").collect();
            proptest::prop_assert!(known_key(&whole, 0).is_some());
            proptest::prop_assert_eq!(known_key(&whole, 0), string(&whole, 0));
        }
    }

    #[test]
    fn long_strings_scan_in_words() {
        let e =
            "{\"event_id\":\"a-long-event-identifier-0001\",\"labels\":{\"region\":\"eu-west-1-région-très-longue\"}}";
        let f = scan(e.as_bytes()).unwrap();
        assert_eq!(f.event_id.as_deref(), Some("a-long-event-identifier-0001"));
        assert_eq!(f.labels.unwrap().pairs().unwrap()[0].1, "eu-west-1-région-très-longue");
        for bad in [
            &b"{\"event_id\":\"a-long-event-\x01dentifier\"}"[..],
            b"{\"event_id\":\"a-long-event-\xffdentifier\"}",
            b"{\"event_id\":\"a-long-event-\\ndentifier\"}",
        ] {
            assert_eq!(scan(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unusual_input_falls_back() {
        for e in [
            &br#"{"event_id":"a\"b"}"#[..],
            br#"{"event_id":null}"#,
            br#"{"x":1}"#,
            br#"{"ts":1,"ts":2}"#,
            br#"{"value":01}"#,
            br#"{"value":1.}"#,
            br#"{"value":1e}"#,
            br#"{"labels":{"a":1}}"#,
            br#"{"ts":1} x"#,
            br#"{"ts":1,}"#,
            br#"{"ts":1"#,
            b"{\"event_id\":\"\xff\"}",
            b"{\"event_id\":\"a\x01\"}",
        ] {
            assert_eq!(scan(e), None, "{}", String::from_utf8_lossy(e));
        }
    }
}
