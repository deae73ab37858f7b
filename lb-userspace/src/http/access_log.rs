//! Access logs in ELB's format, one line per request:
//!
//! ```text
//! type time elb client:port target:port request_processing_time
//! target_processing_time response_processing_time elb_status_code
//! target_status_code received_bytes sent_bytes "request" "user_agent"
//! ssl_cipher ssl_protocol
//! ```
//!
//! `type` is `http`, `https`, `h2` (HTTP/2 over TLS or cleartext) or `ws`/
//! `wss` (upgraded); `elb` is the listener's name. Times are seconds with
//! microseconds, `-1` when the request never reached a target; `-` marks an
//! absent field. Lines go through a channel to a writer thread, so a slow
//! disk never stalls a request.
use std::{
    fmt::Write as _,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    net::SocketAddr,
    path::Path,
    sync::mpsc,
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::warn;

/// How long buffered lines may wait before they are flushed.
const FLUSH_AFTER: Duration = Duration::from_millis(200);

/// One request's line, filled in as it proceeds.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub kind: &'static str,
    pub time: Option<SystemTime>,
    pub client: Option<SocketAddr>,
    pub target: Option<SocketAddr>,
    pub request_processing: Option<Duration>,
    pub target_processing: Option<Duration>,
    pub response_processing: Option<Duration>,
    pub elb_status: u16,
    pub target_status: Option<u16>,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// `METHOD url HTTP/x.y`.
    pub request: String,
    pub user_agent: String,
    pub ssl_cipher: Option<String>,
    pub ssl_protocol: Option<String>,
}

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(|| "-1".into(), |d| format!("{:.6}", d.as_secs_f64()))
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Quotes as ELB does: `"` and `\` escaped, control bytes as `\xHH`.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Entry {
    pub fn line(&self, listener: &str) -> String {
        format!(
            "{} {} {} {} {} {} {} {} {} {} {} {} {} {} {} {}",
            self.kind,
            self.time.map_or_else(|| "-".into(), rfc3339),
            listener,
            or_dash(self.client),
            or_dash(self.target),
            seconds(self.request_processing),
            seconds(self.target_processing),
            seconds(self.response_processing),
            self.elb_status,
            or_dash(self.target_status),
            self.received_bytes,
            self.sent_bytes,
            quoted(&self.request),
            quoted(&self.user_agent),
            or_dash(self.ssl_cipher.as_deref()),
            or_dash(self.ssl_protocol.as_deref()),
        )
    }
}

/// `2024-05-01T12:34:56.123456Z` (UTC, microseconds), as ELB writes times.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A listener's access log file.
#[derive(Clone)]
pub struct AccessLog {
    lines: mpsc::Sender<String>,
}

impl AccessLog {
    /// Opens (appends to) `path` and starts its writer thread, which ends
    /// when the last clone of the handle is dropped.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = mpsc::channel();
        let name = path.display().to_string();
        thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(BufWriter::new(file), &rx, &name))?;
        Ok(Self { lines: tx })
    }

    pub fn write(&self, line: String) {
        // The writer only goes away after a write error it already logged.
        let _ = self.lines.send(line);
    }
}

fn write_lines(mut out: BufWriter<File>, rx: &mpsc::Receiver<String>, name: &str) {
    let mut pending = false;
    loop {
        let next = if pending {
            rx.recv_timeout(FLUSH_AFTER)
        } else {
            rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        };
        let result = match next {
            Ok(line) => {
                pending = true;
                writeln!(out, "{line}")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                pending = false;
                out.flush()
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Err(e) = out.flush() {
                    warn!("access log {name}: {e}");
                }
                return;
            }
        };
        if let Err(e) = result {
            warn!("access log {name}: {e}; no more lines are written");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let e = Entry {
            kind: "https",
            time: Some(UNIX_EPOCH + Duration::from_micros(1_714_566_896_123_456)),
            client: Some("192.0.2.1:5000".parse().unwrap()),
            target: Some("10.0.0.2:80".parse().unwrap()),
            request_processing: Some(Duration::from_micros(12)),
            target_processing: Some(Duration::from_millis(3)),
            response_processing: Some(Duration::ZERO),
            elb_status: 200,
            target_status: Some(200),
            received_bytes: 10,
            sent_bytes: 20,
            request: "GET https://h:443/a?b HTTP/1.1".into(),
            user_agent: "curl/8 \"x\"".into(),
            ssl_cipher: Some("TLS13_AES_128_GCM_SHA256".into()),
            ssl_protocol: Some("TLSv1.3".into()),
        };
        assert_eq!(
            e.line("web"),
            "https 2024-05-01T12:34:56.123456Z web 192.0.2.1:5000 10.0.0.2:80 0.000012 0.003000 \
             0.000000 200 200 10 20 \"GET https://h:443/a?b HTTP/1.1\" \"curl/8 \\\"x\\\"\" \
             TLS13_AES_128_GCM_SHA256 TLSv1.3"
        );
        let none = Entry {
            kind: "http",
            elb_status: 503,
            ..Default::default()
        };
        assert_eq!(
            none.line("w"),
            "http - w - - -1 -1 -1 503 - 0 0 \"\" \"\" - -"
        );
    }
}
