//! Prometheus remote-write 1.0: snappy (block format) + protobuf `WriteRequest`, decoded by
//! hand (only the fields tally stores: timeseries → labels + float samples; metadata,
//! exemplars and native histograms are skipped).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteWriteError {
    #[error("snappy: {0}")]
    Snappy(String),
    #[error("protobuf: {0}")]
    Protobuf(&'static str),
    #[error("decompressed body larger than {0} bytes")]
    TooLarge(usize),
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct TimeSeries {
    pub labels: Vec<(String, String)>,
    /// (timestamp ms, value)
    pub samples: Vec<(i64, f64)>,
}

pub fn decode_snappy(body: &[u8], max: usize) -> Result<Vec<u8>, RemoteWriteError> {
    let len = snap::raw::decompress_len(body).map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if len > max {
        return Err(RemoteWriteError::TooLarge(max));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| RemoteWriteError::Snappy(e.to_string()))
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, RemoteWriteError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&c, rest) = self
                .b
                .split_first()
                .ok_or(RemoteWriteError::Protobuf("truncated varint"))?;
            self.b = rest;
            v |= ((c & 0x7f) as u64) << (7 * i);
            if c & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(RemoteWriteError::Protobuf("varint too long"))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], RemoteWriteError> {
        let (a, rest) = self
            .b
            .split_at_checked(n)
            .ok_or(RemoteWriteError::Protobuf("truncated field"))?;
        self.b = rest;
        Ok(a)
    }

    /// Next (field number, wire type), or None at end.
    fn key(&mut self) -> Result<Option<(u64, u8)>, RemoteWriteError> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some((k >> 3, (k & 7) as u8)))
    }

    fn len_delim(&mut self) -> Result<&'a [u8], RemoteWriteError> {
        let n = self.varint()? as usize;
        self.bytes(n)
    }

    fn skip(&mut self, wire: u8) -> Result<(), RemoteWriteError> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.bytes(8).map(|_| ()),
            2 => self.len_delim().map(|_| ()),
            5 => self.bytes(4).map(|_| ()),
            _ => Err(RemoteWriteError::Protobuf("unsupported wire type")),
        }
    }
}

fn utf8(b: &[u8]) -> Result<String, RemoteWriteError> {
    String::from_utf8(b.to_vec()).map_err(|_| RemoteWriteError::Protobuf("label is not UTF-8"))
}

/// Decodes a `WriteRequest` protobuf.
pub fn decode_write_request(b: &[u8]) -> Result<Vec<TimeSeries>, RemoteWriteError> {
    let mut r = Reader { b };
    let mut out = Vec::new();
    while let Some((field, wire)) = r.key()? {
        if field == 1 && wire == 2 {
            out.push(decode_series(r.len_delim()?)?);
        } else {
            r.skip(wire)?;
        }
    }
    Ok(out)
}

fn decode_series(b: &[u8]) -> Result<TimeSeries, RemoteWriteError> {
    let mut r = Reader { b };
    let mut ts = TimeSeries::default();
    while let Some((field, wire)) = r.key()? {
        match (field, wire) {
            (1, 2) => {
                let mut lr = Reader { b: r.len_delim()? };
                let (mut n, mut v) = (String::new(), String::new());
                while let Some((f, w)) = lr.key()? {
                    match (f, w) {
                        (1, 2) => n = utf8(lr.len_delim()?)?,
                        (2, 2) => v = utf8(lr.len_delim()?)?,
                        _ => lr.skip(w)?,
                    }
                }
                ts.labels.push((n, v));
            }
            (2, 2) => {
                let mut sr = Reader { b: r.len_delim()? };
                let (mut v, mut t) = (0f64, 0i64);
                while let Some((f, w)) = sr.key()? {
                    match (f, w) {
                        (1, 1) => {
                            let x = sr.bytes(8)?;
                            v = f64::from_le_bytes(x.try_into().map_err(|_| RemoteWriteError::Protobuf("double"))?);
                        }
                        (2, 0) => t = sr.varint()? as i64,
                        _ => sr.skip(w)?,
                    }
                }
                ts.samples.push((t, v));
            }
            _ => r.skip(wire)?,
        }
    }
    Ok(ts)
}

/// Encodes a `WriteRequest` (used by tests and the generator).
pub fn encode_write_request(series: &[TimeSeries]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn field_bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    for s in series {
        let mut sb = Vec::new();
        for (n, v) in &s.labels {
            let mut lb = Vec::new();
            field_bytes(&mut lb, 1, n.as_bytes());
            field_bytes(&mut lb, 2, v.as_bytes());
            field_bytes(&mut sb, 1, &lb);
        }
        for (t, v) in &s.samples {
            let mut xb = vec![9u8];
            xb.extend_from_slice(&v.to_le_bytes());
            varint(&mut xb, 2 << 3);
            varint(&mut xb, *t as u64);
            field_bytes(&mut sb, 2, &xb);
        }
        field_bytes(&mut out, 1, &sb);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_garbage() {
        let s = vec![TimeSeries {
            labels: vec![("__name__".into(), "up".into()), ("job".into(), "x".into())],
            samples: vec![(1_700_000_000_000, 1.5), (1_700_000_015_000, -2.0)],
        }];
        let body = snap::raw::Encoder::new()
            .compress_vec(&encode_write_request(&s))
            .unwrap();
        let raw = decode_snappy(&body, 1 << 20).unwrap();
        assert_eq!(decode_write_request(&raw).unwrap(), s);
        assert!(decode_snappy(b"\xff\xff\xff\xff\x0fjunk", 1 << 20).is_err());
        assert!(decode_write_request(&[0x0a, 0x10, 0x01]).is_err());
    }
}
