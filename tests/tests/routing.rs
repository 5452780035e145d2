//! Which paths each listener forwards, refuses, or answers itself.

use mxgate_e2e::*;

/// `/_matrix/...` and `/_synapse/client/...` reach the origin from the client listeners,
/// with the request line unchanged.
#[test]
fn client_listener_forwards_matrix_and_synapse_client() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in CLIENT_LISTENERS {
            for target in [
                "/_matrix/client/versions",
                "/_matrix/client/v3/sync?timeout=0",
                "/_synapse/client/oidc/callback?code=abc&state=xyz",
                "/_matrix",
            ] {
                let before = s.origin.requests().len();
                let res = s.exchange(role, tls, &get(target, "localhost"));
                assert_eq!(
                    res.status, 200,
                    "{target} via client listener (tls={tls}): {res:?}"
                );
                assert_eq!(
                    res.json()["origin"],
                    "ok",
                    "{target}: answer must come from the origin"
                );
                let reqs = s
                    .origin
                    .wait_requests(before + 1, std::time::Duration::from_secs(2));
                let got = &reqs[before].head;
                assert_eq!(
                    show(got.request_line(), 300),
                    show(format!("GET {target} HTTP/1.1").as_bytes(), 300),
                    "request line at the origin"
                );
            }
        }
    });
}

/// The federation listeners forward `/_matrix` but refuse `/_synapse/client` with 404.
#[test]
fn federation_listener_forwards_matrix_refuses_synapse_client() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for tls in [true, false] {
            let mark = s.origin.mark();
            for target in [
                "/_synapse/client/rendezvous",
                "/_synapse/client/oidc/callback",
            ] {
                let res = s.exchange(Role::Federation, tls, &get(target, "localhost"));
                assert_eq!(
                    res.status, 404,
                    "{target} on federation listener (tls={tls}): {res:?}"
                );
            }
            s.origin
                .assert_untouched_since(mark, "/_synapse/client on the federation listener");
            let res = s.exchange(
                Role::Federation,
                tls,
                &get("/_matrix/federation/v1/version", "localhost"),
            );
            assert_eq!(res.status, 200, "federation /_matrix (tls={tls}): {res:?}");
            assert_eq!(res.json()["origin"], "ok");
        }
    });
}

/// Paths outside the routes get 404 on every listener, and the origin never sees them.
#[test]
fn unknown_paths_get_404_and_never_reach_origin() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in ALL_LISTENERS {
            for target in [
                "/",
                "/index.html",
                "/_matrixfoo",
                "/_matrixfoo/client/versions",
                "/_synapse/clientx",
                "/_synapse/metrics",
                "/_synapse/replication/send_event",
                "/.env",
            ] {
                let mark = s.origin.mark();
                let res = s.exchange(role, tls, &get(target, "localhost"));
                assert_eq!(
                    res.status, 404,
                    "{target} via {role:?} (tls={tls}): {res:?}"
                );
                s.origin
                    .assert_untouched_since(mark, &format!("{target} via {role:?} tls={tls}"));
            }
        }
    });
}

/// `GET /health` answers `200 OK` with body `OK` on every listener.
#[test]
fn health_answers_ok_on_every_listener() {
    each_runtime(|rt| {
        let s = Scene::start(rt);
        for (role, tls) in ALL_LISTENERS {
            let res = s.exchange(role, tls, &get("/health", "localhost"));
            assert_eq!(res.status, 200, "/health via {role:?} tls={tls}: {res:?}");
            assert_eq!(res.text(), "OK", "/health body via {role:?} tls={tls}");
        }
    });
}

/// `/_synapse/admin` from a client not in `[admin] allow` gets a 404 JSON error and never
/// reaches the origin.
#[test]
fn admin_api_refused_to_clients_outside_the_allowlist() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.admin_allow(&["10.9.9.9/32"]));
        for (role, tls) in ALL_LISTENERS {
            for target in [
                "/_synapse/admin/v1/server_version",
                "/_synapse/admin/v2/users?from=0",
                "/_synapse/admin",
            ] {
                let mark = s.origin.mark();
                let res = s.exchange(role, tls, &get(target, "localhost"));
                assert_eq!(res.status, 404, "{target} via {role:?} tls={tls}: {res:?}");
                assert!(
                    res.json()["errcode"].is_string(),
                    "{target}: a Matrix JSON error is expected: {res:?}"
                );
                s.origin.assert_untouched_since(mark, target);
            }
        }
    });
}

/// With 127.0.0.1 in `[admin] allow`, the admin API reaches the origin from the client
/// listeners, unchanged.
#[test]
fn admin_api_allowed_from_the_allowlist() {
    each_runtime(|rt| {
        let s = Scene::with(rt, |c| c.admin_allow(&["127.0.0.1/32"]));
        for (role, tls) in CLIENT_LISTENERS {
            let before = s.origin.requests().len();
            let target = "/_synapse/admin/v1/users/%40alice%3Aexample.org/admin";
            let res = s.exchange(role, tls, &get(target, "localhost"));
            assert_eq!(
                res.status, 200,
                "admin via client listener tls={tls}: {res:?}"
            );
            assert_eq!(res.json()["origin"], "ok");
            let reqs = s
                .origin
                .wait_requests(before + 1, std::time::Duration::from_secs(2));
            assert_eq!(
                show(reqs[before].head.request_line(), 300),
                show(format!("GET {target} HTTP/1.1").as_bytes(), 300)
            );
        }
    });
}
