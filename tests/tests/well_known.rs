//! `/.well-known/matrix/*`: derived bodies, JSON, and CORS on every answer.

use mxgate_e2e::*;

fn assert_cors(res: &Response, context: &str) {
    assert_eq!(
        res.header("access-control-allow-origin").as_deref(),
        Some("*"),
        "{context}: {res:?}"
    );
    let methods = res
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(
        methods.contains("GET") && methods.contains("OPTIONS"),
        "{context}: methods {methods:?}"
    );
    let headers = res
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("authorization") && headers.contains("content-type"),
        "{context}: allowed headers {headers:?}"
    );
}

/// `server` and `client` are derived from `public_url`, served as JSON with CORS, and
/// never ask the origin.
#[test]
fn well_known_server_and_client_with_cors() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        let port = s.proxy.client_tls().port();
        let mark = s.origin.mark();
        for (role, tls) in CLIENT_LISTENERS {
            let res = s.exchange(role, tls, &get("/.well-known/matrix/server", "localhost"));
            assert_eq!(res.status, 200, "server, tls={tls}: {res:?}");
            assert!(res
                .header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"));
            assert_cors(&res, "well-known server");
            assert_eq!(
                res.json()["m.server"],
                format!("localhost:{port}"),
                "{res:?}"
            );

            let res = s.exchange(role, tls, &get("/.well-known/matrix/client", "localhost"));
            assert_eq!(res.status, 200, "client, tls={tls}: {res:?}");
            assert!(res
                .header("content-type")
                .unwrap_or_default()
                .starts_with("application/json"));
            assert_cors(&res, "well-known client");
            assert_eq!(
                res.json()["m.homeserver"]["base_url"],
                format!("https://localhost:{port}"),
                "{res:?}"
            );
        }
        s.origin
            .assert_untouched_since(mark, ".well-known is answered by the proxy");
    });
}

/// A browser's preflight gets 204 with the CORS headers.
#[test]
fn well_known_options_preflight() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for path in ["/.well-known/matrix/client", "/.well-known/matrix/server"] {
            let req = request(
                "OPTIONS",
                path,
                "localhost",
                &[
                    "Origin: https://app.element.io",
                    "Access-Control-Request-Method: GET",
                    "Access-Control-Request-Headers: authorization",
                ],
            );
            let res = s.exchange(Role::Client, true, &req);
            assert_eq!(res.status, 204, "OPTIONS {path}: {res:?}");
            assert_cors(&res, path);
        }
    });
}

/// Not configured (`support` is not derived; `server = false` turns one off): 404, still
/// with CORS so the browser can read it.
#[test]
fn well_known_not_configured_gives_404_with_cors() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.section("well_known", "server = false"));
        let mark = s.origin.mark();
        for path in ["/.well-known/matrix/support", "/.well-known/matrix/server"] {
            let res = s.exchange(Role::Client, true, &get(path, "localhost"));
            assert_eq!(res.status, 404, "{path}: {res:?}");
            assert_eq!(
                res.header("access-control-allow-origin").as_deref(),
                Some("*"),
                "{path}: {res:?}"
            );
        }
        let res = s.exchange(
            Role::Client,
            false,
            &get("/.well-known/matrix/client", "localhost"),
        );
        assert_eq!(res.status, 200, "client stays derived: {res:?}");
        s.origin.assert_untouched_since(mark, ".well-known");
    });
}
