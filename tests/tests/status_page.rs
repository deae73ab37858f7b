//! The status page (`api.status_page`, issue 17 item 3) in a real browser:
//! headless Chromium inside the lab's load-balancer namespace opens
//! `http://127.0.0.1:9180/status` on the daemon's API address, is asked for
//! Basic credentials and gives a reader token, and then watches the page
//! refresh itself in place while traffic flows and a target dies. Plus the
//! answers a client without the page's rights gets, and the 404 once the
//! page is turned off by a reload.
use std::{net::SocketAddr, time::Duration};

use lb_tests::{
    browser::{Browser, Credentials},
    lab::{Lab, all_healthy, fast_checks, vip4},
    netns,
    topology::{TARGET_TCP_PORT, VIP_TCP_PORT, target4},
};

const PAGE: &str = "http://127.0.0.1:9180/status";
const READER: &str = "reader-secret-0123456789";
/// Allowed `lb:DescribeStatus` only: not enough for the page.
const STATUS_ONLY: &str = "status-only-secret-0123456789";
/// Flows sent through the VIP while the page is open.
const FLOWS: usize = 40;

fn t4(i: usize) -> SocketAddr {
    SocketAddr::new(target4(i).into(), TARGET_TCP_PORT)
}

/// curl inside the load balancer's namespace: (status, headers + body).
fn curl(lab: &Lab, url: &str, extra: &[&str]) -> (u16, String) {
    let mut cmd = vec!["curl", "-sS", "-i", "-m", "5", "-w", "\n%{http_code}"];
    cmd.extend_from_slice(extra);
    cmd.push(url);
    let out = netns::exec_in_stdout(lab.topo.lb.name(), &cmd);
    let (text, code) = out.rsplit_once('\n').expect("curl's status line");
    (
        code.trim().parse().expect("an HTTP status"),
        text.to_owned(),
    )
}

/// A JavaScript expression: the text of cell `class` in the row of
/// `target` of group `group` ('' when there is no such row).
fn cell(group: &str, target: SocketAddr, class: &str) -> String {
    format!(
        "(document.querySelector('tr[data-group=\"{group}\"][data-target=\"{target}\"] .{class}') || {{textContent: ''}}).textContent"
    )
}

fn listener_cell(listener: &str, class: &str) -> String {
    format!(
        "(document.querySelector('tr[data-listener=\"{listener}\"] .{class}') || {{textContent: ''}}).textContent"
    )
}

#[test]
fn status_page_in_a_browser_follows_traffic_and_health_in_place() {
    let mut lab = Lab::with("status", 2, &[1, 2], |spec| {
        fast_checks(spec);
        let digest = lb::api::auth::token_digest;
        spec.api_extra.extend([
            "listen = \"127.0.0.1:9180\"".to_string(),
            "status_page = true".into(),
            "[[api.policy]]".into(),
            "name = \"read\"".into(),
            "statement = [{ effect = \"Allow\", action = [\"lb:Describe*\"], resource = [\"*\", \"listener/*\", \"target-group/*\"] }]".into(),
            "[[api.policy]]".into(),
            "name = \"status\"".into(),
            "statement = [{ effect = \"Allow\", action = [\"lb:DescribeStatus\"], resource = [\"*\"] }]".into(),
            "[[api.token]]".into(),
            "name = \"reader\"".into(),
            format!("sha256 = \"{}\"", digest(READER)),
            "policies = [\"read\"]".into(),
            "[[api.token]]".into(),
            "name = \"status-only\"".into(),
            format!("sha256 = \"{}\"", digest(STATUS_ONLY)),
            "policies = [\"status\"]".into(),
        ]);
    });
    lab.wait_health("tcp4", Duration::from_secs(15), "all healthy", all_healthy);

    // Over TCP without a token: 401 offering Basic to browsers; a token
    // without every describe action the page shows: 403 naming one.
    let (code, text) = curl(&lab, PAGE, &[]);
    assert_eq!(code, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"lb\""),
        "{text}"
    );
    let (code, text) = curl(&lab, PAGE, &["-u", &format!("ops:{STATUS_ONLY}")]);
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("lb:DescribeListeners"), "{text}");

    let browser = Browser::launch(
        lab.topo.lb.name(),
        lab.topo.run_dir(),
        Some(Credentials {
            user: "operator".into(),
            password: READER.into(),
        }),
    );
    browser.navigate(PAGE);
    assert!(
        browser.challenges() >= 1,
        "the browser was never asked for credentials"
    );
    let victim = t4(1);
    browser.wait_for(
        &format!(
            "{} === 'healthy' && {} === 'healthy'",
            cell("tcp4", victim, "state"),
            cell("tcp4", t4(2), "state")
        ),
        Duration::from_secs(5),
        "both targets healthy",
    );
    assert_eq!(
        browser.eval(&listener_cell("tcp4", "datapath")),
        "xdp",
        "{}",
        browser.diagnostics()
    );
    assert_eq!(browser.eval(&listener_cell("tcp4", "new-flows")), "0");
    // Marks this document: a reload of the page would lose it.
    browser.eval("window.loadedOnce = 'yes'");

    // Live counters: the flows appear without a reload.
    let flows = lab.flows("tcp", vip4(VIP_TCP_PORT), FLOWS);
    assert_eq!(flows.len(), FLOWS);
    browser.wait_for(
        &format!("{} === '{FLOWS}'", listener_cell("tcp4", "new-flows")),
        Duration::from_secs(10),
        "the VIP's new flows",
    );

    // A dead target turns unhealthy on the page within its checks'
    // time (2 failures 1 s apart, 1 s timeout) and a refresh, with ELB's
    // reason and no share of new flows, and the transition is listed.
    lab.topo.stop_server(1);
    let took = browser.wait_for(
        &format!("{} === 'unhealthy'", cell("tcp4", victim, "state")),
        Duration::from_secs(15),
        "the dead target unhealthy",
    );
    eprintln!("the page showed the target unhealthy {took:?} after its server stopped");
    assert_eq!(
        browser.eval(&cell("tcp4", victim, "reason")),
        "Target.FailedHealthChecks"
    );
    assert_eq!(browser.eval(&cell("tcp4", victim, "effective-weight")), "0");
    assert_eq!(browser.eval(&cell("tcp4", victim, "weight")), "1");
    assert_eq!(browser.eval(&cell("tcp4", t4(2), "state")), "healthy");
    assert_eq!(
        browser.eval(&format!(
            "document.querySelectorAll('#transitions li[data-group=\"tcp4\"][data-target=\"{victim}\"][data-to=\"unhealthy\"]').length"
        )),
        1
    );
    assert_eq!(
        browser.eval("window.loadedOnce"),
        "yes",
        "the page was reloaded instead of refreshed in place"
    );

    // Readable on a phone: at 390 px the page itself does not scroll
    // sideways (the tables scroll in their own boxes).
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({ "width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true }),
    );
    browser.wait_for(
        "document.documentElement.scrollWidth <= 390",
        Duration::from_secs(5),
        "no sideways scrolling at 390 px",
    );
    // The README's screenshot, at a desktop's width.
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({ "width": 1440, "height": 900, "deviceScaleFactor": 1, "mobile": false }),
    );
    browser.wait_for(
        "window.innerWidth === 1440",
        Duration::from_secs(5),
        "a desktop's width",
    );
    let png = browser.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    std::fs::write(&shot, &png).expect("write the screenshot");
    eprintln!("screenshot: {}", shot.display());

    let errors = browser.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    drop(browser);

    // Turned off by a reload: 404, even for a token that may read it.
    let text = std::fs::read_to_string(&lab.config).expect("read config");
    assert!(text.contains("status_page = true"));
    std::fs::write(
        &lab.config,
        text.replace("status_page = true", "status_page = false"),
    )
    .expect("write config");
    lab.daemon.as_mut().expect("daemon").reload();
    let (code, text) = curl(&lab, PAGE, &["-u", &format!("operator:{READER}")]);
    assert_eq!(code, 404, "{text}");
    assert!(text.contains("UnknownOperation"), "{text}");
}
