//! `Content-Encoding` of webhook deliveries (SPEC §6): `gzip` (and its old name `x-gzip`) is
//! inflated as the body streams in, capped at the body limit, so signatures are checked over
//! and events stored as the inflated bytes; `identity` or no header is the body as sent; any
//! other coding is refused with 415.

use std::io::{self, Write as _};

use auth_contract::{ErrorCode, problem::Problem};
use axum::{
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use flate2::write::MultiGzDecoder;

use crate::error::{GatewayError, REQUEST_ID, Source};

/// The codings a delivery may use, as a 415 answer's `Accept-Encoding` lists them.
pub const ACCEPTED: &str = "gzip, identity";

/// How a delivery's body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
}

/// A `Content-Encoding` the gateway does not inflate: 415, problem+json, with
/// `Accept-Encoding` naming what is accepted (RFC 9110 §15.5.16).
#[derive(Debug)]
pub struct UnsupportedEncoding;

impl IntoResponse for UnsupportedEncoding {
    fn into_response(self) -> Response {
        let detail = "the only accepted content codings are gzip (also spelled x-gzip) and identity";
        let problem = Problem::new(ErrorCode::UnsupportedMediaType, detail.to_owned())
            .with_request_id(REQUEST_ID.try_with(Clone::clone).ok());
        let mut response = problem.into_response();
        response.headers_mut().insert(header::ACCEPT_ENCODING, HeaderValue::from_static(ACCEPTED));
        response.extensions_mut().insert(Source::Downstream);
        response
    }
}

/// The delivery's coding, its name compared case-insensitively; an empty value is `identity`.
/// Exactly one coding is accepted: a list (`gzip, gzip`), several headers or an unknown name
/// is refused rather than partly undone.
pub fn coding(headers: &HeaderMap) -> Result<Coding, UnsupportedEncoding> {
    let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
    let (value, None) = (values.next(), values.next()) else { return Err(UnsupportedEncoding) };
    let Some(value) = value else { return Ok(Coding::Identity) };
    let text = value.to_str().map_err(|_| UnsupportedEncoding)?.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("identity") {
        Ok(Coding::Identity)
    } else if text.eq_ignore_ascii_case("gzip") || text.eq_ignore_ascii_case("x-gzip") {
        Ok(Coding::Gzip)
    } else {
        Err(UnsupportedEncoding)
    }
}

/// Collects inflated bytes and fails the write that would take them past `limit`, which
/// stops the decoder there: the rest of a bomb is never inflated.
struct Capped {
    out: Vec<u8>,
    limit: usize,
    over: bool,
}

impl io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() > self.limit.saturating_sub(self.out.len()) {
            self.over = true;
            return Err(io::Error::other("the inflated body is over the limit"));
        }
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A gzip stream inflated piece by piece as the body arrives. Every member of a multi-member
/// stream is inflated (RFC 1952 §2.2); anything after the last one that is not another member
/// is corrupt.
pub struct Inflater {
    decoder: MultiGzDecoder<Capped>,
    limit: usize,
}

impl Inflater {
    pub fn new(limit: usize) -> Self {
        let out = Capped { out: Vec::new(), limit, over: false };
        Self { decoder: MultiGzDecoder::new(out), limit }
    }

    fn refusal(&self) -> GatewayError {
        if self.decoder.get_ref().over {
            GatewayError::BodyTooLarge { limit: self.limit as u64 }
        } else {
            GatewayError::BadRequest("the body is not a valid gzip stream".into())
        }
    }

    /// Inflates the next piece of compressed body. The decoder produces at most its buffer's
    /// worth (32 KiB) per step before handing it to the capped output, so the work done past
    /// the limit is bounded whatever the compression ratio.
    pub fn write(&mut self, compressed: &[u8]) -> Result<(), GatewayError> {
        self.decoder.write_all(compressed).map_err(|_| self.refusal())
    }

    /// The whole inflated body; a stream that stops before its trailer, or whose CRC or
    /// length does not match, is corrupt.
    pub fn finish(mut self) -> Result<Vec<u8>, GatewayError> {
        self.decoder.try_finish().map_err(|_| self.refusal())?;
        let refusal = self.refusal();
        self.decoder.finish().map(|capped| capped.out).map_err(|_| refusal)
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compression, write::GzEncoder};

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::CONTENT_ENCODING, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn codings_are_read_strictly() {
        assert_eq!(coding(&headers(&[])).ok(), Some(Coding::Identity));
        assert_eq!(coding(&headers(&["identity"])).ok(), Some(Coding::Identity));
        assert_eq!(coding(&headers(&["GZIP"])).ok(), Some(Coding::Gzip));
        assert_eq!(coding(&headers(&["x-gzip"])).ok(), Some(Coding::Gzip));
        for refused in [&["br"][..], &["deflate"], &["gzip, gzip"], &["gzip", "gzip"], &["compress"]] {
            assert!(coding(&headers(refused)).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn inflates_in_pieces_and_refuses_past_the_limit_or_corrupt() {
        let data = b"{\"hello\":\"world\"}".repeat(100);
        let compressed = gzip(&data);
        let mut inflater = Inflater::new(data.len());
        for piece in compressed.chunks(7) {
            assert!(inflater.write(piece).is_ok());
        }
        assert_eq!(inflater.finish().ok(), Some(data.clone()));

        // Two members are one body.
        let mut inflater = Inflater::new(data.len() * 2);
        assert!(inflater.write(&[compressed.clone(), compressed.clone()].concat()).is_ok());
        assert_eq!(inflater.finish().ok(), Some([data.clone(), data.clone()].concat()));

        let mut inflater = Inflater::new(data.len() - 1);
        let over = inflater.write(&compressed).and_then(|()| inflater.finish().map(drop));
        assert!(matches!(over, Err(GatewayError::BodyTooLarge { .. })), "{over:?}");

        for corrupt in [
            compressed[..compressed.len() - 4].to_vec(),
            b"not gzip at all".to_vec(),
            Vec::new(),
            [compressed.clone(), b"trailing".to_vec()].concat(),
        ] {
            let mut inflater = Inflater::new(1 << 20);
            let result = inflater.write(&corrupt).and_then(|()| inflater.finish().map(drop));
            assert!(matches!(result, Err(GatewayError::BadRequest(_))), "{result:?}");
        }
        let mut flipped = compressed.clone();
        let crc_at = flipped.len() - 8;
        flipped[crc_at] ^= 1;
        let mut inflater = Inflater::new(1 << 20);
        let result = inflater.write(&flipped).and_then(|()| inflater.finish().map(drop));
        assert!(matches!(result, Err(GatewayError::BadRequest(_))), "a CRC mismatch is corrupt: {result:?}");
    }
}
