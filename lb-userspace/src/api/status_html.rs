//! The status page's HTML: one self-contained document (style and script
//! inline, no external resources), readable on a phone (the tables scroll
//! sideways in their own boxes). Every value that comes from the config,
//! the control loop or the network is escaped by [`esc`] on its way in;
//! the Content-Security-Policy lets only the page's own script and style
//! run, by hash, as a second line of defence.
use std::{
    collections::BTreeMap,
    fmt::{self, Write},
};

use base64::Engine;
use sha2::{Digest, Sha256};

use super::status_page::Snapshot;
use crate::control::command::{CountersReport, TargetHealthReport};

/// How often the page fetches itself again, in milliseconds: the
/// tightest health-check interval is a second.
pub const REFRESH_MS: u32 = 1000;

/// The page's style.
const STYLE: &str = "\
body{font:15px/1.4 system-ui,sans-serif;margin:0;padding:0 .8em 2em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:.6em 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .3em}
h3{font-size:1em;margin:.8em 0 .2em}
.meta{margin:0;color:#555}.meta span{display:inline-block;margin-right:1em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;min-width:100%;background:#fff}
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.healthy{color:#17702b}.unhealthy{color:#b3261e;font-weight:600}
.draining,.initial{color:#8a5a00}.unused,.unavailable{color:#666}
.drop{color:#b3261e}.muted{color:#777}
#conn{color:#b3261e;min-height:1.4em}
ol{padding-left:1.4em}li{margin:.15em 0}";

/// The page's script: fetch the page again every [`REFRESH_MS`] and swap
/// the new `<main>` in (the server rendered and escaped it); a failure
/// is shown on the page, and the old figures stay.
const SCRIPT: &str = r#""use strict";
(function () {
  var main = document.getElementById("page");
  var every = Number(main.dataset.refreshMs);
  var note = document.getElementById("conn");
  function refresh() {
    fetch(location.origin + location.pathname, { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html").getElementById("page");
        if (!next) { throw new Error("the answer is not the status page"); }
        document.getElementById("page").replaceWith(document.adoptNode(next));
        note.textContent = "";
      })
      .catch(function (e) { note.textContent = "Not updated: " + e.message; })
      .then(function () { setTimeout(refresh, every); });
  }
  setTimeout(refresh, every);
})();
"#;

/// A rendered page and the policy that goes with it.
pub struct Document {
    pub html: String,
    pub content_security_policy: String,
}

/// Text made safe for HTML element content and double-quoted attributes.
pub struct Esc<'a>(&'a str);

/// Escapes `s` when formatted.
pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The whole document for `s`.
pub fn render(s: &Snapshot) -> Document {
    let mut h = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = write_document(&mut h, s);
    Document {
        html: h,
        content_security_policy: format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            csp_hash(SCRIPT),
            csp_hash(STYLE)
        ),
    }
}

fn write_document(h: &mut String, s: &Snapshot) -> fmt::Result {
    write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>lb status</title><link rel=\"icon\" href=\"data:,\">\
         <style>{STYLE}</style></head><body>\n"
    )?;
    writeln!(h, "<main id=\"page\" data-refresh-ms=\"{REFRESH_MS}\">")?;
    header(h, s)?;
    listeners(h, s)?;
    groups(h, s)?;
    datapath(h, s)?;
    transitions(h, s)?;
    write!(
        h,
        "</main>\n<p id=\"conn\" role=\"status\"></p>\n<script>{SCRIPT}</script></body></html>\n"
    )
}

fn header(h: &mut String, s: &Snapshot) -> fmt::Result {
    let st = &s.status;
    write!(
        h,
        "<h1>lb status</h1><p class=\"meta\"><span>version {}</span>\
         <span>data path <b id=\"dataplane\">{}</b></span>",
        esc(&st.version),
        esc(&st.dataplane)
    )?;
    if let Some(zone) = &st.zone {
        write!(h, "<span>zone {}</span>", esc(zone))?;
    }
    write!(
        h,
        "<span>up {}</span><span>targets {} ({} healthy, {} unhealthy)</span>",
        duration(st.uptime_s),
        st.targets,
        st.healthy,
        st.unhealthy
    )?;
    if st.drained {
        h.push_str("<span class=\"unhealthy\">host drained</span>");
    }
    if let Some(reload) = &st.last_reload {
        write!(h, "<span>last reload: {}</span>", esc(reload))?;
    }
    h.push_str("</p>\n");
    Ok(())
}

/// Counters by name (a listener's name, a target's `address:port`),
/// summed where one name has several entries.
fn by_name(list: &[CountersReport]) -> BTreeMap<&str, CountersReport> {
    let mut map: BTreeMap<&str, CountersReport> = BTreeMap::new();
    for c in list {
        let e = map.entry(c.name.as_str()).or_insert(CountersReport {
            name: c.name.clone(),
            packets_in: 0,
            bytes_in: 0,
            packets_out: 0,
            bytes_out: 0,
            new_flows: 0,
        });
        e.packets_in += c.packets_in;
        e.bytes_in += c.bytes_in;
        e.packets_out += c.packets_out;
        e.bytes_out += c.bytes_out;
        e.new_flows += c.new_flows;
    }
    map
}

const COUNTER_HEADS: &str = "<th class=\"n\">packets in</th><th class=\"n\">bytes in</th>\
<th class=\"n\">packets out</th><th class=\"n\">bytes out</th><th class=\"n\">new flows</th>";

fn counter_cells(h: &mut String, c: Option<&CountersReport>) -> fmt::Result {
    match c {
        Some(c) => write!(
            h,
            "<td class=\"n packets-in\">{}</td><td class=\"n bytes-in\">{}</td>\
             <td class=\"n packets-out\">{}</td><td class=\"n bytes-out\">{}</td>\
             <td class=\"n new-flows\">{}</td>",
            c.packets_in, c.bytes_in, c.packets_out, c.bytes_out, c.new_flows
        ),
        None => {
            h.push_str(&"<td class=\"n muted\">-</td>".repeat(5));
            Ok(())
        }
    }
}

fn listeners(h: &mut String, s: &Snapshot) -> fmt::Result {
    let counters = s.stats.as_ref().map(|st| by_name(&st.listeners));
    h.push_str(
        "<section id=\"listeners\"><h2>Listeners</h2><div class=\"scroll\"><table>\
         <thead><tr><th>name</th><th>protocol</th><th>VIP</th><th>data path</th>\
         <th>target groups</th>",
    );
    h.push_str(COUNTER_HEADS);
    h.push_str("</tr></thead><tbody>\n");
    for l in &s.listeners {
        let vip = std::net::SocketAddr::new(l.address, l.port).to_string();
        write!(
            h,
            "<tr data-listener=\"{}\"><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"datapath\">{}</td><td>{}</td>",
            esc(&l.name),
            esc(&l.name),
            esc(&l.protocol),
            esc(&vip),
            esc(&l.served_by),
            esc(&l.target_groups.join(", "))
        )?;
        counter_cells(h, counters.as_ref().and_then(|c| c.get(l.name.as_str())))?;
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody></table></div>");
    if s.stats.is_none() {
        h.push_str("<p class=\"muted\">No packet counters: the XDP data path is not running.</p>");
    }
    h.push_str("</section>\n");
    Ok(())
}

fn groups(h: &mut String, s: &Snapshot) -> fmt::Result {
    let counters = s.stats.as_ref().map(|st| by_name(&st.targets));
    h.push_str("<section id=\"groups\"><h2>Target groups</h2>\n");
    for (g, targets) in &s.groups {
        write!(
            h,
            "<h3>{} <span class=\"muted\">{} {} &middot; {} healthy, {} unhealthy, {} draining</span></h3>\
             <div class=\"scroll\"><table data-group=\"{}\"><thead><tr><th>target</th>\
             <th>state</th><th>reason</th><th>zone</th><th class=\"n\">weight</th>\
             <th class=\"n\">effective weight</th>",
            esc(&g.name),
            esc(&g.protocol),
            g.port,
            g.healthy,
            g.unhealthy,
            g.draining,
            esc(&g.name)
        )?;
        h.push_str(COUNTER_HEADS);
        h.push_str("</tr></thead><tbody>\n");
        for t in targets {
            target_row(h, &g.name, t, counters.as_ref())?;
        }
        if targets.is_empty() {
            h.push_str("<tr><td class=\"muted\" colspan=\"11\">no targets</td></tr>\n");
        }
        h.push_str("</tbody></table></div>\n");
    }
    h.push_str("</section>\n");
    Ok(())
}

fn target_row(
    h: &mut String,
    group: &str,
    t: &TargetHealthReport,
    counters: Option<&BTreeMap<&str, CountersReport>>,
) -> fmt::Result {
    let target = t.target.to_string();
    let state = t.state.as_str();
    write!(
        h,
        "<tr data-group=\"{}\" data-target=\"{}\"><td>{}</td>\
         <td class=\"state {state}\">{state}</td><td class=\"reason\" title=\"{}\">{}</td>\
         <td class=\"zone\">{}</td><td class=\"n weight\">{}</td>\
         <td class=\"n effective-weight\">{}</td>",
        esc(group),
        esc(&target),
        esc(&target),
        esc(&t.description),
        esc(t.reason.as_deref().unwrap_or("-")),
        esc(t.zone.as_deref().unwrap_or("-")),
        t.weight,
        t.effective_weight
    )?;
    counter_cells(h, counters.and_then(|c| c.get(target.as_str())))?;
    h.push_str("</tr>\n");
    Ok(())
}

fn datapath(h: &mut String, s: &Snapshot) -> fmt::Result {
    let Some(stats) = &s.stats else {
        return Ok(());
    };
    h.push_str(
        "<section id=\"datapath\"><h2>Data path verdicts</h2><div class=\"scroll\"><table>\
         <thead><tr><th>verdict</th><th class=\"n\">packets</th></tr></thead><tbody>\n",
    );
    for (name, n) in &stats.datapath {
        let class = if name.starts_with("drop_") {
            " class=\"drop\""
        } else {
            ""
        };
        writeln!(
            h,
            "<tr data-verdict=\"{}\"{class}><td>{}</td><td class=\"n count\">{n}</td></tr>",
            esc(name),
            esc(name)
        )?;
    }
    h.push_str("</tbody></table></div></section>\n");
    Ok(())
}

fn transitions(h: &mut String, s: &Snapshot) -> fmt::Result {
    h.push_str("<section id=\"transitions\"><h2>Recent health transitions</h2>");
    if s.transitions.is_empty() {
        h.push_str("<p class=\"muted\">None since the daemon started.</p></section>\n");
        return Ok(());
    }
    h.push_str("<ol>\n");
    for t in &s.transitions {
        let ago = s.now_ms.saturating_sub(t.unix_ms) / 1000;
        write!(
            h,
            "<li data-group=\"{}\" data-target=\"{}\" data-to=\"{}\">\
             <span class=\"muted\">{} ago</span> {} {}: {} &rarr; <span class=\"{}\">{}</span>",
            esc(&t.target_group),
            esc(&t.target.to_string()),
            esc(&t.to),
            duration(ago),
            esc(&t.target_group),
            esc(&t.target.to_string()),
            esc(&t.from),
            esc(&t.to),
            esc(&t.to)
        )?;
        if let Some(reason) = &t.reason {
            write!(h, " ({})", esc(reason))?;
        }
        h.push_str("</li>\n");
    }
    h.push_str("</ol></section>\n");
    Ok(())
}

/// `3 s`, `4 min 05 s`, `2 h 03 min`, `5 d 02 h`.
fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min {s:02} s"),
        (0, _, _) => format!("{h} h {m:02} min"),
        _ => format!("{d} d {h:02} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\"").to_string(),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("plain").to_string(), "plain");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(duration(3), "3 s");
        assert_eq!(duration(245), "4 min 05 s");
        assert_eq!(duration(7380), "2 h 03 min");
        assert_eq!(duration(5 * 86400 + 7200), "5 d 02 h");
    }
}
