//! The config loader: TOML text -> `Config::parse` -> `validate`, then
//! what `lb run` derives from a config that passed, so that anything
//! `lb check` accepts is also something the daemon can build.
use crate::{
    config::{CheckKind, Config, Matcher},
    health::jobs_from_config,
    http::rules::Rules,
    routable::Routable,
};

pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text) else {
        return;
    };
    match config.validate() {
        // What `lb check` prints: every error with its key path.
        Err(errors) => {
            assert!(!errors.is_empty(), "an Err with no error in it");
            for e in errors.iter() {
                let line = e.to_string();
                assert!(!line.is_empty());
            }
        }
        Ok(()) => derive(&config),
    }
}

/// What the daemon builds from a valid config without touching the
/// system.
fn derive(config: &Config) {
    let _ = config.summary();
    let _ = Routable::from_config(config);
    for l in &config.listeners {
        let _ = Rules::compile(&l.rules);
    }
    for job in jobs_from_config(config) {
        if let CheckKind::Http(h) | CheckKind::Https(h) = &job.check.kind {
            // The matcher is shown as it is parsed (`lb target-groups`).
            let shown = h.matcher.to_string();
            let again = Matcher::parse(&shown)
                .unwrap_or_else(|e| panic!("matcher shown as {shown:?} does not parse: {e}"));
            assert_eq!(again, h.matcher, "matcher {shown:?}");
        }
    }
}
