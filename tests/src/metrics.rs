//! Reading one series of a Prometheus text page served in a namespace.

use crate::netns;

/// The value of `series` (name and labels as printed) in the page at
/// `http://{listen}/metrics` inside `ns`; `None` when absent.
pub fn scrape(ns: &str, listen: &str, series: &str) -> Option<f64> {
    let url = format!("http://{listen}/metrics");
    let text = netns::exec_in_stdout(ns, &["curl", "-sS", "-m", "5", url.as_str()]);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("{series} = {v:?}: {e}"))
        })
}
