//! SPDY/3.1 framing, as much of it as `kubectl port-forward` speaks.
//!
//! kubectl opens one connection and, on it, a pair of *streams* per forwarded connection
//! (see `port_forward`). SPDY carries them as frames, each an 8-byte head and a payload:
//!
//! ```text
//! control  1 | version 15 | type 16 | flags 8 | length 24 | payload
//! data     0 | stream 31            | flags 8 | length 24 | bytes
//! ```
//!
//! Of the control frames, the client opens a stream with SYN_STREAM (its headers name
//! the port), the server accepts it with SYN_REPLY, either side cancels one with
//! RST_STREAM, PING is echoed, GOAWAY ends the session. SETTINGS, WINDOW_UPDATE and HEADERS
//! are read and ignored: kubectl's SPDY library keeps no flow-control windows, so neither
//! does this side. The FIN flag on a frame means its sender will write no more on that
//! stream.
//!
//! Headers travel as name/value blocks (a 32-bit count, then a 32-bit length before each
//! name and value), compressed with zlib as one stream per direction for the whole
//! connection, flushed after each block. The client's stream starts from SPDY's preset
//! dictionary ([`dictionary`]): the inflater is primed with it as if the dictionary had
//! been the stream's first bytes, which is what a preset dictionary means. This side
//! compresses without one, which readers accept.

use bytes::{BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// A frame this side acts on.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// The client opens stream `id` with these headers.
    Open {
        id: u32,
        headers: Vec<(String, String)>,
    },
    /// Bytes on stream `id`; `fin`: the last the client sends on it.
    Data { id: u32, fin: bool, bytes: Bytes },
    /// The client cancels stream `id`.
    Reset { id: u32 },
    /// To be echoed.
    Ping(u32),
    /// The client ends the session.
    GoAway,
    /// A frame with nothing to do: SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY.
    Ignored,
}

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FIN: u8 = 1;
/// RST_STREAM's status for a stream the server will not serve.
pub const REFUSED_STREAM: u32 = 3;
/// The most a decompressed header block may hold.
const HEADER_LIMIT: usize = 1 << 20;

/// Reads frames from the bytes the client sends, however they were cut.
pub struct Reader {
    buffer: BytesMut,
    inflater: Decompress,
    /// Whether the zlib header of the client's header stream is still to come.
    zlib_header_due: bool,
}

impl Default for Reader {
    fn default() -> Reader {
        // The dictionary as a stored deflate block that is not the last: the inflater
        // then has it as history, and the client's back-references into it resolve.
        let dictionary = dictionary();
        let length = u16::try_from(dictionary.len()).unwrap_or(u16::MAX);
        let mut primer = vec![0];
        primer.extend(length.to_le_bytes());
        primer.extend((!length).to_le_bytes());
        primer.extend(&dictionary);
        let mut inflater = Decompress::new(false);
        let mut history = Vec::with_capacity(2 * dictionary.len());
        let _ = inflater.decompress_vec(&primer, &mut history, FlushDecompress::Sync);
        debug_assert_eq!(history, dictionary);
        Reader {
            buffer: BytesMut::new(),
            inflater,
            zlib_header_due: true,
        }
    }
}

impl Reader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if the bytes so far hold one; an error ends the session.
    pub fn next(&mut self) -> Result<Option<Frame>, String> {
        let Some(head) = self.buffer.get(..8) else {
            return Ok(None);
        };
        let word =
            |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        let (first, second) = (word(0), word(4));
        let (flags, length) = ((second >> 24) as u8, (second & 0x00ff_ffff) as usize);
        if self.buffer.len() < 8 + length {
            return Ok(None);
        }
        let frame = self.buffer.split_to(8 + length).freeze();
        let payload = frame.slice(8..);
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                id: first,
                fin: flags & FIN != 0,
                bytes: payload,
            }));
        }
        let field = |at: usize| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .ok_or_else(|| format!("a control frame of {length} bytes is too short"))
        };
        Ok(Some(match (first & 0xffff) as u16 {
            SYN_STREAM => {
                let id = field(0)?;
                let block = payload.get(10..).unwrap_or_default();
                Frame::Open {
                    id,
                    headers: self.headers(block)?,
                }
            }
            RST_STREAM => Frame::Reset { id: field(0)? },
            PING => Frame::Ping(field(0)?),
            GOAWAY => Frame::GoAway,
            _ => Frame::Ignored,
        }))
    }

    /// A name/value block, decompressed and read.
    fn headers(&mut self, mut block: &[u8]) -> Result<Vec<(String, String)>, String> {
        if self.zlib_header_due {
            // CMF and FLG, then the dictionary's id if FLG says one was used.
            let skip = if block.get(1).is_some_and(|flg| flg & 0x20 != 0) {
                6
            } else {
                2
            };
            block = block
                .get(skip..)
                .ok_or("a header block without its zlib header")?;
            self.zlib_header_due = false;
        }
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            let (read, written) = (self.inflater.total_in(), plain.len());
            self.inflater
                .decompress_vec(block, &mut plain, FlushDecompress::Sync)
                .map_err(|e| format!("a header block does not inflate: {e}"))?;
            let consumed = usize::try_from(self.inflater.total_in() - read).unwrap_or(0);
            block = block.get(consumed..).unwrap_or_default();
            if block.is_empty() && plain.len() < plain.capacity() {
                break;
            }
            if plain.len() > HEADER_LIMIT || (consumed == 0 && plain.len() == written) {
                return Err("a header block is too large or does not end".into());
            }
            plain.reserve(plain.capacity());
        }
        let mut fields = plain.as_slice();
        let mut take = |n: usize| {
            let (head, rest) = fields
                .split_at_checked(n)
                .ok_or("a header block is cut short")?;
            fields = rest;
            Ok::<_, String>(head)
        };
        let number = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        let count = number(take(4)?);
        let mut headers = Vec::new();
        for _ in 0..count {
            let name = take(4).map(number).and_then(&mut take)?.to_vec();
            let value = take(4).map(number).and_then(&mut take)?.to_vec();
            let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| "a header is not UTF-8");
            headers.push((text(name)?, text(value)?));
        }
        Ok(headers)
    }
}

/// Writes frames to the client.
pub struct Writer {
    deflater: Compress,
}

impl Default for Writer {
    fn default() -> Writer {
        Writer {
            deflater: Compress::new(Compression::fast(), true),
        }
    }
}

impl Writer {
    /// SYN_REPLY: stream `id` is accepted (with no headers).
    pub fn accept(&mut self, id: u32) -> Bytes {
        let block = self.deflate(&0u32.to_be_bytes());
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend(block);
        control(SYN_REPLY, 0, &payload)
    }

    fn deflate(&mut self, mut plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        loop {
            let read = self.deflater.total_in();
            let flushed = self
                .deflater
                .compress_vec(plain, &mut out, FlushCompress::Sync);
            plain = &plain[usize::try_from(self.deflater.total_in() - read).unwrap_or(0)..];
            if flushed.is_err() || (plain.is_empty() && out.len() < out.capacity()) {
                return out;
            }
            out.reserve(out.capacity());
        }
    }
}

/// A DATA frame of `bytes` on stream `id`; `fin`: the last this side sends on it.
pub fn data(id: u32, fin: bool, bytes: &[u8]) -> Bytes {
    frame(id & 0x7fff_ffff, if fin { FIN } else { 0 }, bytes)
}

/// RST_STREAM of stream `id` with `status`.
pub fn reset(id: u32, status: u32) -> Bytes {
    let mut payload = id.to_be_bytes().to_vec();
    payload.extend(status.to_be_bytes());
    control(RST_STREAM, 0, &payload)
}

/// The answer to a PING.
pub fn pong(id: u32) -> Bytes {
    control(PING, 0, &id.to_be_bytes())
}

fn control(kind: u16, flags: u8, payload: &[u8]) -> Bytes {
    frame(0x8003_0000 | u32::from(kind), flags, payload)
}

fn frame(first: u32, flags: u8, payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(8 + payload.len());
    frame.put_u32(first);
    // A payload over 16 MiB is never built: reads are cut smaller.
    frame.put_u32(u32::from(flags) << 24 | (payload.len() as u32 & 0x00ff_ffff));
    frame.put_slice(payload);
    frame.freeze()
}

/// SPDY/3's preset dictionary for header blocks (draft-mbelshe-httpbis-spdy-00,
/// 2.6.10.1): common header names, each after its length, then common values.
pub fn dictionary() -> Vec<u8> {
    const WORDS: &str = "options head post put delete trace accept accept-charset \
        accept-encoding accept-language accept-ranges age allow authorization cache-control \
        connection content-base content-encoding content-language content-length \
        content-location content-md5 content-range content-type date etag expect expires \
        from host if-match if-modified-since if-none-match if-range if-unmodified-since \
        last-modified location max-forwards pragma proxy-authenticate proxy-authorization \
        range referer retry-after server te trailer transfer-encoding upgrade user-agent \
        vary via warning www-authenticate method get status 200_OK version HTTP/1.1 url \
        public set-cookie keep-alive origin";
    const VALUES: &str = "100101201202205206300302303304305306307402405406407408409410\
        411412413414415416417502504505203 Non-Authoritative Information204 No Content301 \
        Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 \
        Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May \
        Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,\
        text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,\
        text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8\
        charset=iso-8859-1,utf-,*,enq=0.";
    let mut dictionary = Vec::new();
    for word in WORDS.split_whitespace() {
        let word = word.replace('_', " ");
        dictionary.extend((word.len() as u32).to_be_bytes());
        dictionary.extend(word.as_bytes());
    }
    dictionary.extend(VALUES.as_bytes());
    dictionary
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's side of the header stream: one deflater for every block, started from
    /// the dictionary.
    struct Client {
        deflater: Compress,
        blocks: usize,
    }

    impl Client {
        fn new() -> Client {
            // Deflating the dictionary first and keeping only what comes after gives
            // blocks whose back-references reach into the dictionary, as a client's do.
            let mut deflater = Compress::new(Compression::best(), false);
            let mut prefix = Vec::with_capacity(4096);
            deflater
                .compress_vec(&dictionary(), &mut prefix, FlushCompress::Sync)
                .expect("deflates");
            Client {
                deflater,
                blocks: 0,
            }
        }

        fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
            let mut plain = (headers.len() as u32).to_be_bytes().to_vec();
            for (name, value) in headers {
                for text in [name, value] {
                    plain.extend((text.len() as u32).to_be_bytes());
                    plain.extend(text.as_bytes());
                }
            }
            // The zlib header, with FDICT, before the first block only.
            let mut block = if self.blocks == 0 {
                vec![0x78, 0xbb, 0, 0, 0, 0]
            } else {
                vec![]
            };
            self.blocks += 1;
            let mut rest = Vec::with_capacity(4096);
            self.deflater
                .compress_vec(&plain, &mut rest, FlushCompress::Sync)
                .expect("deflates");
            block.extend(rest);
            block
        }
    }

    fn syn_stream(id: u32, block: &[u8]) -> Vec<u8> {
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend([0, 0, 0, 0, 0, 0]);
        payload.extend(block);
        control(SYN_STREAM, 0, &payload).to_vec()
    }

    #[test]
    fn the_dictionary_is_spdy3s_1423_bytes() {
        let dictionary = dictionary();
        assert_eq!(dictionary.len(), 1423);
        assert!(dictionary.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dictionary.ends_with(b"utf-,*,enq=0."));
        assert!(dictionary.windows(10).any(|w| w == b"\0\0\0\x06200 OK"));
    }

    #[test]
    fn frames_are_read_however_the_bytes_are_cut() {
        let mut client = Client::new();
        let block = client.block(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ]);
        let mut wire = syn_stream(1, &block);
        wire.extend(data(1, true, b""));
        wire.extend(pong(7));
        wire.extend(syn_stream(
            3,
            &client.block(&[("streamtype", "data"), ("port", "8080")]),
        ));
        let mut reader = Reader::default();
        let mut frames = Vec::new();
        for byte in wire {
            reader.push(&[byte]);
            while let Some(frame) = reader.next().expect("a good frame") {
                frames.push(frame);
            }
        }
        let headers = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            frames,
            [
                Frame::Open {
                    id: 1,
                    headers: headers(&[
                        ("streamtype", "error"),
                        ("port", "8080"),
                        ("requestid", "0")
                    ]),
                },
                Frame::Data {
                    id: 1,
                    fin: true,
                    bytes: Bytes::new()
                },
                Frame::Ping(7),
                Frame::Open {
                    id: 3,
                    headers: headers(&[("streamtype", "data"), ("port", "8080")])
                },
            ]
        );
    }

    #[test]
    fn a_reply_carries_an_empty_header_block_that_inflates() {
        let mut writer = Writer::default();
        let reply = writer.accept(5);
        assert_eq!(&reply[..4], &[0x80, 0x03, 0x00, 0x02]);
        assert_eq!(&reply[8..12], &5u32.to_be_bytes());
        let mut inflater = Decompress::new(true);
        let mut plain = Vec::with_capacity(64);
        inflater
            .decompress_vec(&reply[12..], &mut plain, FlushDecompress::Sync)
            .expect("inflates");
        assert_eq!(plain, [0, 0, 0, 0]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut reader = Reader::default();
        reader.push(&syn_stream(1, b"\x78\x01not deflate at all"));
        assert!(reader.next().is_err());
        let mut reader = Reader::default();
        reader.push(&[0x80, 0x03, 0x00, 0x03, 0, 0, 0, 2, 0, 0]);
        assert!(
            reader.next().is_err(),
            "a RST_STREAM too short for its stream id"
        );
    }
}
