//! Config loader: any text → a `Config` or a non-empty list of problems, never a panic; every
//! location a problem reports lies inside the text, and rendering problems or the summary of a
//! valid configuration never panics either. A configuration that parses keeps the contract's
//! refusals: no issuer takes the Airflow Execution API audience (§2), no secret is a literal and
//! no URL carries userinfo (§6), no two route prefixes differ only in case (§3), and the summary
//! never prints a key-set URL's query string (§6: `?…`).
#![no_main]

use airgate::config::{AIRFLOW_EXECUTION_AUDIENCE, Config, SecretRef, issuer::KeySource};
use libfuzzer_sys::fuzz_target;

fn check_valid(config: &Config) {
    let summary = airgate::config::summary(config);
    for issuer in &config.issuers {
        assert!(
            !issuer.audiences.iter().any(|a| a == AIRFLOW_EXECUTION_AUDIENCE),
            "issuer {} accepts the Execution API audience",
            issuer.name
        );
        // `if let`, not `match`: a key source added later needs no change here.
        if let KeySource::JwksUrl(url) | KeySource::Discovery(url) = &issuer.keys {
            assert!(url.username().is_empty() && url.password().is_none(), "issuer {}: userinfo in {url}", issuer.name);
            if let Some(q) = url.query().filter(|q| !q.is_empty()) {
                assert!(!summary.contains(q), "the summary prints the query of issuer {}'s key-set URL", issuer.name);
            }
        }
        if let KeySource::SharedSecret(s) | KeySource::SigningKey(s) = &issuer.keys {
            assert!(!matches!(s, SecretRef::Inline(_)), "issuer {}: a literal secret", issuer.name);
        }
    }
    for upstream in &config.upstreams {
        assert!(!upstream.authority.as_str().contains('@'), "upstream {}: userinfo", upstream.name);
        assert!(
            !matches!(upstream.subscription_key, Some(SecretRef::Inline(_))),
            "upstream {}: a literal subscription key",
            upstream.name
        );
    }
    for (i, a) in config.routes.iter().enumerate() {
        for b in &config.routes[..i] {
            assert!(
                a.path_prefix == b.path_prefix || !a.path_prefix.eq_ignore_ascii_case(&b.path_prefix),
                "routes {} and {} have prefixes {:?} and {:?} that differ only in case",
                b.name,
                a.name,
                b.path_prefix,
                a.path_prefix
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match airgate::config::parse(text) {
        Ok(config) => check_valid(&config),
        Err(problems) => {
            assert!(!problems.is_empty(), "an error with no problem in it");
            let lines = text.split('\n').count();
            for p in problems.iter() {
                if let Some((line, col)) = p.location {
                    assert!(line >= 1 && line <= lines && col >= 1, "{p} outside a text of {lines} lines");
                }
            }
            let _ = problems.to_string();
        }
    }
});
