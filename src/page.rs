//! The status page (`GET /` on the admin listener): one self-contained HTML page, rendered on
//! the server from the same figures as `/status`, with inline CSS and SVG charts and a small
//! inline script that refreshes it every few seconds (without the script, a meta refresh
//! does). No external asset: it works offline and behind any firewall.
//!
//! Every figure carries a `data-figure` name, so a test (or a scraper) can read it.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use crate::VERSION;
use crate::budget::StoreThrottle;
use crate::history::{Point, Window};
use crate::status::{Snapshot, Status};

/// How often the page refreshes itself, in seconds.
const REFRESH_S: u64 = 5;

/// The page for the proxy's status now.
pub async fn render(status: &Status) -> String {
    let (snapshot, window) = status.window().await;
    let throttles = status.recent_throttles();
    let page = Page {
        status,
        s: &snapshot,
        w: &window,
        throttles: &throttles,
    };
    let mut out = String::with_capacity(32 * 1024);
    page.write(&mut out);
    out
}

struct Page<'a> {
    status: &'a Status,
    s: &'a Snapshot,
    w: &'a Window,
    throttles: &'a [StoreThrottle],
}

const STYLE: &str = r#"
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dde5;--bg:#f6f7f9;--card:#fff;--ok:#1f8a4c;--warn:#b7791f;--bad:#c53030;--send:#3b6fd8;--rep:#8a5cd8}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg)}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:baseline;padding:.8rem 1.2rem;background:#1d2330;color:#fff}
header h1{font-size:1.1rem;margin:0}header .meta{color:#c6cbd6}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:1rem;padding:1rem 1.2rem}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8rem 1rem}
section.wide{grid-column:1/-1}h2{font-size:.95rem;margin:0 0 .6rem;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.big{font-size:1.6rem;font-weight:600}.muted{color:var(--muted)}
.bar{height:18px;background:#e8ebf0;border-radius:9px;overflow:hidden;margin:.4rem 0}.bar>div{height:100%;background:var(--ok)}
.bar.low>div{background:var(--warn)}.bar.out>div{background:var(--bad)}
.badge{display:inline-block;padding:.1rem .5rem;border-radius:10px;font-size:.8rem;font-weight:600;color:#fff;background:var(--ok)}
.badge.warn{background:var(--warn)}.badge.bad{background:var(--bad)}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25rem .4rem;border-bottom:1px solid var(--line)}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:auto 1fr;gap:.2rem 1rem;margin:0}dt{color:var(--muted)}dd{margin:0;font-variant-numeric:tabular-nums}
svg{width:100%;height:auto;display:block}svg text{font-size:10px;fill:var(--muted)}
.legend span{margin-right:1rem}.legend i{display:inline-block;width:10px;height:10px;margin-right:.3rem;vertical-align:middle}
footer{padding:0 1.2rem 1rem;color:var(--muted);font-size:.8rem}
"#;

/// Keeps the page current without a reload's flash: fetches it again and swaps the body.
const SCRIPT: &str = r#"
(function(){
  function local(){document.querySelectorAll('time[datetime]').forEach(function(t){
    var d=new Date(t.getAttribute('datetime'));if(!isNaN(d))t.title=d.toLocaleString();});}
  local();
  function refresh(){fetch(location.href,{cache:'no-store'}).then(function(r){return r.text();})
    .then(function(html){var doc=new DOMParser().parseFromString(html,'text/html');
      document.body.innerHTML=doc.body.innerHTML;local();}).catch(function(){})
    .then(function(){setTimeout(refresh,REFRESH_MS);});}
  setTimeout(refresh,REFRESH_MS);
})();
"#;

impl Page<'_> {
    fn write(&self, out: &mut String) {
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
             <title>bcproxy status</title><noscript><meta http-equiv=\"refresh\" content=\"{REFRESH_S}\"></noscript>\
             <style>{STYLE}</style></head><body>"
        );
        self.header(out);
        out.push_str("<main>");
        self.budget(out);
        self.throttles(out);
        self.queue(out);
        self.cache(out);
        self.clients(out);
        self.upstream(out);
        self.cluster(out);
        out.push_str("</main>");
        let _ = write!(
            out,
            "<footer>Figures over the last {} (the store's window; since start when shorter: \
             <span data-figure=\"window_span_s\">{}</span> s here) unless marked <em>now</em>. \
             Refreshes every {REFRESH_S} s. JSON: <a href=\"/status\">/status</a> · \
             Prometheus: <a href=\"/metrics\">/metrics</a></footer>",
            duration(self.s.budget.window),
            self.w.span.as_secs()
        );
        let _ = writeln!(
            out,
            "<script>{}</script></body></html>",
            SCRIPT.replace("REFRESH_MS", &(REFRESH_S * 1000).to_string())
        );
    }

    fn header(&self, out: &mut String) {
        let state = if let Some(code) = self.s.credential_refused {
            format!(
                "<span class=\"badge bad\" data-figure=\"state\">store refuses the credential ({code})</span>"
            )
        } else if self.status.is_draining() {
            "<span class=\"badge warn\" data-figure=\"state\">draining</span>".to_string()
        } else if self.s.budget.paused {
            "<span class=\"badge warn\" data-figure=\"state\">paused</span>".to_string()
        } else {
            "<span class=\"badge\" data-figure=\"state\">serving</span>".to_string()
        };
        let _ = write!(
            out,
            "<header><h1>bcproxy {VERSION}</h1>{state}<span class=\"meta\">store {}</span>\
             <span class=\"meta\">{} dialect</span><span class=\"meta\">up {}</span></header>",
            escape(&self.status.upstream_url()),
            self.status.dialect().as_str(),
            duration(Duration::from_secs(self.s.uptime.as_secs())),
        );
    }

    fn budget(&self, out: &mut String) {
        let b = &self.s.budget;
        let pct = if b.limit == 0 {
            0.0
        } else {
            (b.remaining as f64 / b.limit as f64 * 100.0).min(100.0)
        };
        let class = match pct {
            p if p <= 0.0 => " out",
            p if p < 20.0 => " low",
            _ => "",
        };
        let pause = match (b.paused, b.pause_left) {
            (false, _) => "<span data-figure=\"paused\">no</span>: sends go out".to_string(),
            (true, Some(left)) => format!(
                "<span data-figure=\"paused\">yes</span>: the store throttled; sends resume in {}",
                duration(left)
            ),
            (true, None) => "<span data-figure=\"paused\">yes</span>: the store throttled (another instance paused)".to_string(),
        };
        let _ = write!(
            out,
            "<section class=\"wide\"><h2>Budget</h2>\
             <div><span class=\"big\" data-figure=\"budget_remaining\">{}</span> \
             <span class=\"muted\">of <span data-figure=\"budget_limit\">{}</span> calls left in a {} window (now)</span></div>\
             <div class=\"bar{class}\" title=\"{pct:.0}% left\"><div style=\"width:{pct:.1}%\"></div></div>\
             <dl><dt>Store's last report</dt><dd data-figure=\"budget_reported\">{}</dd>\
             <dt>Paused</dt><dd>{pause}</dd>\
             <dt>Sent to the store</dt><dd data-figure=\"window_sent\">{}</dd>\
             <dt>In flight (now)</dt><dd data-figure=\"in_flight\">{}</dd></dl>",
            b.remaining,
            b.limit,
            duration(b.window),
            b.reported
                .map_or_else(|| "none yet".to_string(), |r| format!("{r} left")),
            self.w.counts.sent,
            b.in_flight,
        );
        chart_sends(out, &self.w.series, b.window);
        chart_remaining(out, &self.w.series, b.window, b.limit);
        out.push_str("</section>");
    }

    fn throttles(&self, out: &mut String) {
        let _ = write!(
            out,
            "<section><h2>Store throttles</h2><dl><dt>509/429 from the store</dt>\
             <dd data-figure=\"window_store_throttles\">{}</dd>\
             <dt>Throttle answers to apps</dt><dd data-figure=\"window_throttle_answers\">{}</dd></dl>",
            self.w.counts.store_throttles, self.w.counts.throttled,
        );
        if self.throttles.is_empty() {
            out.push_str(
                "<p class=\"muted\" data-figure=\"recent_throttles\">None since start.</p>",
            );
        } else {
            out.push_str(
                "<table data-figure=\"recent_throttles\"><tr><th>When (UTC)</th><th class=\"n\">Status</th><th>Pause</th></tr>",
            );
            for t in self.throttles.iter().rev() {
                let pause = match (t.pause, t.reason) {
                    (Some(len), Some(reason)) => format!("{} ({})", duration(len), escape(reason)),
                    (Some(len), None) => duration(len),
                    _ => "already paused".to_string(),
                };
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td class=\"n\">{}</td><td>{pause}</td></tr>",
                    time(t.at),
                    t.status
                );
            }
            out.push_str("</table>");
        }
        out.push_str("</section>");
    }

    fn queue(&self, out: &mut String) {
        let (p50, p99) = self.w.wait_ms;
        let _ = write!(
            out,
            "<section><h2>Queue</h2><dl>\
             <dt>Waiting (now)</dt><dd data-figure=\"queue_depth\">{}</dd>\
             <dt>Calls that waited</dt><dd data-figure=\"window_queued\">{}</dd>\
             <dt>Wait p50</dt><dd data-figure=\"wait_p50_ms\">{}</dd>\
             <dt>Wait p99</dt><dd data-figure=\"wait_p99_ms\">{}</dd></dl></section>",
            self.s.budget.queued,
            self.w.counts.queued,
            millis(p50),
            millis(p99),
        );
    }

    fn cache(&self, out: &mut String) {
        let c = &self.w.counts;
        let cacheable = c.cacheable();
        let ratio = |n: u64| {
            if cacheable == 0 {
                "–".to_string()
            } else {
                format!("{:.1}%", n as f64 / cacheable as f64 * 100.0)
            }
        };
        let enabled = if self.status.cache_enabled() {
            ""
        } else {
            " <span class=\"badge warn\">off</span>"
        };
        let _ = write!(
            out,
            "<section><h2>Cache{enabled}</h2><dl>\
             <dt>Entries (now)</dt><dd data-figure=\"cache_entries\">{}</dd>\
             <dt>Size (now)</dt><dd data-figure=\"cache_bytes\" data-bytes=\"{}\">{}</dd></dl>\
             <table><tr><th>Answer</th><th class=\"n\">Calls</th><th class=\"n\">Share</th></tr>",
            self.s.cache_entries,
            self.s.cache_bytes,
            bytesize::ByteSize(self.s.cache_bytes).display().iec(),
        );
        for (name, n) in [
            ("hit", c.hits),
            ("miss", c.misses),
            ("stale", c.stale),
            ("coalesced", c.coalesced),
            ("shared", c.shared),
        ] {
            let _ = write!(
                out,
                "<tr><td>{name}</td><td class=\"n\" data-figure=\"cache_{name}\">{n}</td>\
                 <td class=\"n\" data-figure=\"cache_{name}_ratio\">{}</td></tr>",
                ratio(n)
            );
        }
        let _ = write!(
            out,
            "<tr><td>bypass</td><td class=\"n\" data-figure=\"cache_bypass\">{}</td><td class=\"n\">–</td></tr></table></section>",
            c.bypass
        );
    }

    fn clients(&self, out: &mut String) {
        let _ = write!(
            out,
            "<section><h2>Clients</h2><table><tr><th>Client</th><th class=\"n\">Calls</th>\
             <th class=\"n\">Throttle answers</th></tr>"
        );
        let mut shown = 0;
        for c in self
            .w
            .clients
            .iter()
            .filter(|c| c.calls > 0 || c.throttled > 0)
        {
            let (name, key) = match &c.client {
                Some(name) => {
                    let name = escape(name);
                    (name.clone(), name)
                }
                None => ("<em>no client name</em>".to_string(), "-".to_string()),
            };
            let _ = write!(
                out,
                "<tr><td>{name}</td><td class=\"n\" data-figure=\"client_calls\" data-client=\"{key}\">{}</td>\
                 <td class=\"n\" data-figure=\"client_throttled\" data-client=\"{key}\">{}</td></tr>",
                c.calls, c.throttled
            );
            shown += 1;
        }
        if shown == 0 {
            out.push_str("<tr><td colspan=\"3\" class=\"muted\">No calls yet.</td></tr>");
        }
        let _ = write!(
            out,
            "</table><p class=\"muted\">All calls: <span data-figure=\"window_calls\">{}</span></p></section>",
            self.w.counts.calls
        );
    }

    fn upstream(&self, out: &mut String) {
        let (p50, p99) = self.w.upstream_ms;
        let last = self.status.last_answer_ago().map_or_else(
            || "never".to_string(),
            |ago| format!("{} ago", duration(ago)),
        );
        let _ = write!(
            out,
            "<section><h2>Store</h2><dl>\
             <dt>Latency p50</dt><dd data-figure=\"upstream_p50_ms\">{}</dd>\
             <dt>Latency p99</dt><dd data-figure=\"upstream_p99_ms\">{}</dd>\
             <dt>Last answer</dt><dd>{last}</dd></dl>\
             <table><tr><th>Errors</th><th class=\"n\">Calls</th></tr>",
            millis(p50),
            millis(p99),
        );
        for (kind, n) in &self.w.errors {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"n\" data-figure=\"upstream_errors\" data-kind=\"{}\">{n}</td></tr>",
                kind.as_str().replace('_', " "),
                kind.as_str()
            );
        }
        out.push_str("</table></section>");
    }

    fn cluster(&self, out: &mut String) {
        let Some(cl) = &self.s.cluster else {
            return;
        };
        let badge = if cl.mode == "connected" { "" } else { " bad" };
        let _ = write!(
            out,
            "<section><h2>Cluster</h2><dl><dt>Name</dt><dd>{}</dd><dt>This instance</dt><dd>{}</dd>\
             <dt>Mode</dt><dd><span class=\"badge{badge}\" data-figure=\"cluster_mode\">{}</span>{}</dd>\
             <dt>Sharing the budget</dt><dd data-figure=\"cluster_sharing\">{}</dd></dl>\
             <table><tr><th>Instance</th><th class=\"n\">Seen</th></tr>",
            escape(&cl.name),
            escape(&cl.instance),
            cl.mode,
            cl.reason
                .as_deref()
                .map(|r| format!(" {}", escape(r)))
                .unwrap_or_default(),
            cl.sharing,
        );
        for (name, ago) in &cl.instances {
            let _ = write!(
                out,
                "<tr><td data-figure=\"cluster_instance\">{}</td><td class=\"n\">{} ago</td></tr>",
                escape(name),
                duration(*ago)
            );
        }
        out.push_str("</table></section>");
    }
}

const CHART_W: f64 = 720.0;
const CHART_H: f64 = 120.0;
const PAD_L: f64 = 44.0;
const PAD_B: f64 = 18.0;

/// The x of a point `ago` before now, on a chart spanning `span`.
fn x_of(ago: Duration, span: Duration) -> f64 {
    let span = span.as_secs_f64().max(1.0);
    PAD_L + (CHART_W - PAD_L) * (1.0 - (ago.as_secs_f64() / span).min(1.0))
}

fn y_of(value: f64, max: f64) -> f64 {
    let max = if max <= 0.0 { 1.0 } else { max };
    CHART_H - PAD_B - (CHART_H - PAD_B - 6.0) * (value / max).clamp(0.0, 1.0)
}

fn axes(out: &mut String, span: Duration, max: u64, label: &str) {
    let _ = write!(
        out,
        "<svg viewBox=\"0 0 {CHART_W} {CHART_H}\" role=\"img\" aria-label=\"{label}\">\
         <line x1=\"{PAD_L}\" y1=\"{b}\" x2=\"{CHART_W}\" y2=\"{b}\" stroke=\"#d9dde5\"/>\
         <text x=\"{tx}\" y=\"10\" text-anchor=\"end\">{max}</text>\
         <text x=\"{tx}\" y=\"{b}\" text-anchor=\"end\">0</text>\
         <text x=\"{PAD_L}\" y=\"{ty}\">−{}</text>\
         <text x=\"{CHART_W}\" y=\"{ty}\" text-anchor=\"end\">now</text>",
        duration(span),
        b = CHART_H - PAD_B,
        tx = PAD_L - 4.0,
        ty = CHART_H - 4.0,
    );
}

/// Sends per step over the window, as bars.
fn chart_sends(out: &mut String, series: &[Point], span: Duration) {
    let max = series.iter().map(|p| p.sent).max().unwrap_or(0).max(1);
    out.push_str("<h2 style=\"margin-top:1rem\">Sends to the store</h2>");
    axes(out, span, max, "sends per step over the window");
    for pair in series.windows(2) {
        let (before, p) = (&pair[0], &pair[1]);
        if p.sent == 0 {
            continue;
        }
        let left = x_of(before.ago, span);
        let right = x_of(p.ago, span);
        let top = y_of(p.sent as f64, max as f64);
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#3b6fd8\"><title>{} sent</title></rect>",
            left.min(right - 2.0),
            (right - left - 1.0).max(2.0),
            CHART_H - PAD_B - top,
            p.sent
        );
    }
    out.push_str("</svg>");
}

/// The proxy's view of the remaining budget and the store's reports over the window.
fn chart_remaining(out: &mut String, series: &[Point], span: Duration, limit: u64) {
    // Scaled to the limit: a store that reports more (its whole budget, when budget.limit
    // keeps to a share of it) is drawn at the top, and the legend says so.
    let max = series
        .iter()
        .map(|p| p.remaining)
        .max()
        .unwrap_or(0)
        .max(limit)
        .max(1);
    let above = series.iter().any(|p| p.reported.is_some_and(|r| r > max));
    let _ = write!(
        out,
        "<h2 style=\"margin-top:1rem\">Remaining</h2><div class=\"legend\">\
         <span><i style=\"background:#1f8a4c\"></i>proxy's view</span>\
         <span><i style=\"background:#8a5cd8\"></i>store's report{}</span></div>",
        if above {
            " (above the limit: drawn at the top)"
        } else {
            ""
        }
    );
    axes(out, span, max, "remaining budget over the window");
    let line = |out: &mut String, points: Vec<(f64, f64)>, colour: &str, dash: &str| {
        if points.is_empty() {
            return;
        }
        let coords: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = write!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/>",
            coords.join(" ")
        );
    };
    let view = series
        .iter()
        .map(|p| (x_of(p.ago, span), y_of(p.remaining as f64, max as f64)))
        .collect();
    line(out, view, "#1f8a4c", "");
    let reported = series
        .iter()
        .filter_map(|p| Some((x_of(p.ago, span), y_of(p.reported? as f64, max as f64))))
        .collect();
    line(out, reported, "#8a5cd8", " stroke-dasharray=\"4 3\"");
    out.push_str("</svg>");
}

/// `1h 2m`, `12s`, `850ms`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 if secs.is_multiple_of(60) => format!("{}m", secs / 60),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ if secs.is_multiple_of(3600) => format!("{}h", secs / 3600),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// A time in milliseconds, `–` when there is none.
fn millis(ms: Option<f64>) -> String {
    match ms {
        None => "–".to_string(),
        Some(ms) if ms < 10.0 => format!("{ms:.2} ms"),
        Some(ms) => format!("{ms:.0} ms"),
    }
}

/// A wall-clock time as `HH:MM:SS` UTC, with its full form for the viewer's own zone.
fn time(at: SystemTime) -> String {
    let full = humantime::format_rfc3339_seconds(at).to_string();
    let clock = full.get(11..19).unwrap_or(&full).to_string();
    format!("<time datetime=\"{full}\">{clock}</time>")
}

/// Text made safe inside HTML elements and attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn durations_read_as_an_operator_writes_them() {
        assert_eq!(duration(Duration::from_millis(850)), "850ms");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(3600)), "1h");
        assert_eq!(duration(Duration::from_secs(3720)), "1h 2m");
        assert_eq!(duration(Duration::from_secs(90)), "1m 30s");
        assert_eq!(millis(Some(1.234)), "1.23 ms");
        assert_eq!(millis(None), "–");
    }

    #[test]
    fn charts_place_now_at_the_right_edge() {
        let span = Duration::from_secs(60);
        assert_eq!(x_of(Duration::ZERO, span), CHART_W);
        assert_eq!(x_of(span, span), PAD_L);
        assert_eq!(y_of(0.0, 10.0), CHART_H - PAD_B);
        assert_eq!(y_of(10.0, 10.0), 6.0);
    }
}
